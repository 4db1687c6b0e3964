"""Snapshot summaries are checked where they are read back: an object at a summary key that is not that
snapshot's summary is skipped (warned) by the next sync, `fileshare list`, forget and the mirror, instead of
crashing them or becoming the next sync's base."""
from __future__ import annotations

import io
import json
import logging

import pytest

from tests.unit.test_fileshare_sync import repo_for, sync
from tests.unit.test_fileshare_trees import make_tree
from workers.repository.summary import SummaryRefused


def plant(repo, snapshot: str, body) -> None:
    raw = json.dumps(body).encode()
    repo.meta.put(repo.summary_key(snapshot), lambda: io.BytesIO(raw))


def test_objects_that_are_not_a_snapshots_summary_are_skipped_by_the_next_sync(tmp_path, caplog):
    # Given a genuine snapshot, then objects written at other snapshots' summary keys
    sizes = make_tree(tmp_path / "src")
    first = sync(tmp_path, "s1")
    repo = repo_for(tmp_path)
    genuine = repo.summary("s1")
    plant(repo, "x-list", [genuine])                                        # not an object
    plant(repo, "x-other", {**genuine})                                     # s1's summary under another id
    plant(repo, "x-counts", {**genuine, "snapshot_id": "x-counts", "files": "many"})
    plant(repo, "x-time", {**genuine, "snapshot_id": "x-time", "created_at": None})
    # When the next sync looks for its base
    caplog.set_level(logging.WARNING)
    second = sync(tmp_path, "s2")
    # Then it took the genuine snapshot and read nothing again
    assert second.stats.parent_snapshot_id == "s1" and first.stats.files == len(sizes)
    assert second.stats.files_unchanged == len(sizes) and second.stats.bytes_read == 0
    # And the listing holds the two genuine snapshots only, each planted object warned about with its fault
    assert [s["snapshot_id"] for s in repo.summaries()] == ["s1", "s2"]
    warned = " ".join(r.getMessage() for r in caplog.records if "skipping snapshot summary" in r.getMessage())
    for fault in ("'x-list' is not an object", "'snapshot_id' must be 'x-other'", "'files' must be a whole number",
                  "'created_at' must be an ISO 8601 time"):
        assert fault in warned


def test_asking_for_one_snapshots_summary_refuses_a_foreign_object_with_a_hint(tmp_path):
    make_tree(tmp_path / "src")
    sync(tmp_path, "s1")
    repo = repo_for(tmp_path)
    plant(repo, "s9", {**repo.summary("s1"), "snapshot_id": "s9", "partial": "no"})
    with pytest.raises(SummaryRefused) as refused:
        repo.summary("s9")
    assert "'partial' must be true or false" in refused.value.message and "delete the summary" in refused.value.hint
    assert repo.summary("missing") is None
