"""The file-share handler: events in and out, idempotency, locked and changing files, configuration."""
from __future__ import annotations

import dataclasses
import logging
import threading

import pytest

from contracts import BackupDue, BackupDuePayload, FileshareSyncedPayload, FileshareSyncRequested, \
    FileshareSyncRequestedPayload
from tests.unit.forge import plan_set
from tests.unit.test_fileshare_trees import make_tree
from workers.artifacts.service import ArtifactStore
from workers.artifacts.setmanifest import read_set
from workers.config import load_settings
from workers.fileshare import handler as handler_module
from workers.fileshare.handler import FileshareHandler
from workers.fileshare.localtree import LocalTree
from workers.fileshare.syncstats import SyncStats
from workers.fileshare.tree import FileProblem, Stat
from workers.runtime.errors import DuplicateJob, PermanentError, TransientError
from workers.runtime.worker import JobContext
from workers.storage.local import LocalStore

CTX = JobContext("fileshare", "fileshare:1", 0, logging.LoggerAdapter(logging.getLogger("test"), {}))


def handler(tmp_path, **fileshare) -> FileshareHandler:
    settings = load_settings(fileshare={"source": str(tmp_path / "src"), "cache_dir": str(tmp_path / "cache"),
                                        "wait": 0.01, **fileshare})
    return FileshareHandler(settings.fileshare, settings.retention, ArtifactStore(LocalStore(tmp_path / "store")))


def planned(h: FileshareHandler, set_id: str) -> FileshareHandler:
    """The catalog's plan for the set (it plans every backup-due): the worker syncs into planned sets only."""
    plan_set(h.store.backend, set_id, "fileshare")
    return h


def due(set_id: str, *components: str) -> BackupDue:
    return BackupDue(source="test", stamp="stamp1", correlation_id=set_id,
                     payload=BackupDuePayload(backup_set_id=set_id, components=components))


class Flaky(LocalTree):
    """A local tree where one file is locked (sharing violation) and another keeps changing."""

    locked, changing = "site/wwwroot/index.html", "LogFiles/2026/11/app.log"

    def __init__(self, root) -> None:
        super().__init__(root)
        self.attempts: dict[str, int] = {}

    def read(self, rel: str, listed: Stat, limit: int):
        self.attempts[rel] = self.attempts.get(rel, 0) + 1
        if rel == self.locked:
            raise FileProblem("locked", f"{rel}: in use by another process (sharing violation)")
        got = super().read(rel, listed, limit)
        if rel == self.changing and got is not None:
            data, after = got
            return data, Stat(after.name, False, after.size, after.mtime_ns + self.attempts[rel], after.attrs)
        return got


def test_backup_due_with_fileshare_emits_synced_and_artifact_stored_and_redelivery_re_emits(tmp_path):
    # Given a tree and a backup-due naming the file share
    make_tree(tmp_path / "src")
    h, event = planned(handler(tmp_path), "set-1"), due("set-1", "secrets", "fileshare")
    # When it is handled
    synced, stored = h.backup_due(event, CTX)
    # Then a snapshot of the set is reported, and the set holds the reference artifact the catalog counts
    assert synced.type == "fileshare-synced" and synced.correlation_id == "set-1"
    assert synced.payload.snapshot_id == "set-1" and synced.payload.files == 47 and not synced.payload.partial
    assert stored.payload.key == "stamp1/set-1/fileshare/snapshot.json" and stored.payload.component == "fileshare"
    assert "fileshare" in read_set(h.store, "stamp1", "set-1").components
    packs = sorted((tmp_path / "store/stamp1/fileshare/packs").iterdir())
    # When the same event is delivered again
    again = h.backup_due(event, CTX)
    # Then the same result is re-emitted and nothing new is stored
    assert again[0].payload == synced.payload and again[1].payload.deduplicated
    assert sorted((tmp_path / "store/stamp1/fileshare/packs").iterdir()) == packs


class Held(LocalTree):
    """A local tree whose first read waits until the test lets it go on (a sync caught mid-way)."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.reading, self.go_on = threading.Event(), threading.Event()

    def read(self, rel: str, listed: Stat, limit: int):
        self.reading.set()
        assert self.go_on.wait(30)
        return super().read(rel, listed, limit)


def test_a_second_backup_due_for_a_set_being_synced_is_a_duplicate_and_syncs_nothing(tmp_path, monkeypatch):
    # Given a sync of set-9 under way (for one backup-due)
    make_tree(tmp_path / "src")
    opened: list[Held] = []
    tree = Held(tmp_path / "src")
    monkeypatch.setattr(handler_module, "open_tree", lambda *a, **kw: opened.append(tree) or tree)
    h = planned(handler(tmp_path), "set-9")
    results: list = []
    first = threading.Thread(target=lambda: results.append(h.backup_due(due("set-9", "fileshare"), CTX)))
    first.start()
    assert tree.reading.wait(30)
    # When another backup-due for the same set arrives meanwhile
    other = JobContext("fileshare", "fileshare:2", 0, CTX.logger)
    # Then it is a duplicate: no second sync
    with pytest.raises(DuplicateJob, match="stamp1/set-9/fileshare/snapshot.json already runs"):
        h.backup_due(due("set-9", "fileshare"), other)
    tree.go_on.set()
    first.join(30)
    assert len(opened) == 1 and results[0][0].payload.files == 47
    # And once the first finished, the other's redelivery re-emits its result without syncing
    again = h.backup_due(due("set-9", "fileshare"), other)
    assert len(opened) == 1 and again[0].payload == results[0][0].payload and again[1].payload.deduplicated


def test_backup_due_without_fileshare_does_nothing(tmp_path):
    # Given a backup-due for databases only / When handled / Then no snapshot, no events
    assert handler(tmp_path).backup_due(due("set-2", "databases"), CTX) == []
    assert not (tmp_path / "store").exists()


def test_locked_file_is_retried_then_skipped_and_reported_with_a_warning(tmp_path, monkeypatch):
    # Given a file held locked and a log file that changes on every read
    make_tree(tmp_path / "src")
    tree = Flaky(tmp_path / "src")
    monkeypatch.setattr(handler_module, "open_tree", lambda *a, **kw: tree)
    request = FileshareSyncRequested(source="test", stamp="stamp1", correlation_id="set-3",
                                     payload=FileshareSyncRequestedPayload())
    # When a sync is requested
    synced, stored, warning = planned(handler(tmp_path, retries=2, reread=1), "set-3").sync_requested(request, CTX)
    # Then the locked file was tried 1 + 2 times, then skipped with its reason; the snapshot is partial
    assert tree.attempts[Flaky.locked] == 3
    p = synced.payload
    assert p.partial and p.skipped_count == 1 and p.skipped[0].path == Flaky.locked
    assert "sharing violation" in p.skipped[0].reason and "2 retries" in p.skipped[0].reason
    # And the changing file was re-read, then stored as last read and counted
    assert tree.attempts[Flaky.changing] == 2 and p.changed_while_read == 1 and p.files == 46
    # And a warning notification names the file and how to fix it
    assert warning.type == "job-failed" and warning.payload.severity == "warning"
    assert Flaky.locked in warning.payload.message and "FAIL_ON_SKIPPED" in warning.payload.hint


def test_fail_on_skipped_fails_the_job_instead(tmp_path, monkeypatch):
    # Given fail_on_skipped and a locked file
    make_tree(tmp_path / "src")
    monkeypatch.setattr(handler_module, "open_tree", lambda *a, **kw: Flaky(tmp_path / "src"))
    # When the backup runs / Then the job fails (to be retried) and no snapshot is recorded as complete
    with pytest.raises(TransientError, match="could not be read"):
        planned(handler(tmp_path, retries=0, fail_on_skipped=True), "set-4").backup_due(due("set-4", "fileshare"), CTX)
    assert not list((tmp_path / "store/stamp1/fileshare/snapshots").glob("*"))


def test_no_configured_share_is_a_permanent_error_with_a_hint(tmp_path):
    # Given no source / When a backup asks for the file share / Then it fails permanently, naming the setting
    settings = load_settings(fileshare={"cache_dir": str(tmp_path / "cache")})
    h = FileshareHandler(settings.fileshare, settings.retention, ArtifactStore(LocalStore(tmp_path / "store")))
    with pytest.raises(PermanentError) as failure:
        h.backup_due(due("s", "fileshare"), CTX)
    assert "APPSVC_DR_FILESHARE__SOURCE" in failure.value.hint


def test_the_sync_statistics_carry_every_field_of_the_synced_event_but_the_manifest_key():
    # Given the typed statistics a sync reports and the payload of the fileshare-synced event built from them
    stats = {f.name for f in dataclasses.fields(SyncStats)}
    payload = set(FileshareSyncedPayload.model_fields)
    # Then every statistic is a field of the event, and the only field they do not give is the one commit adds
    assert stats <= payload and payload - stats == {"manifest_key"}
