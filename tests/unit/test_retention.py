"""Retention rules on a real LocalStore with fabricated backup sets (plans, markers, artifact records)."""
from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import pytest

from contracts import new_backup_set_id
from workers.artifacts.setmanifest import artifact_key, write_manifest
from workers.artifacts.retention import apply_retention, delete_set, plan_retention
from workers.artifacts.service import ArtifactStore
from workers.artifacts.sets import COMPLETE, PLAN, Plan, write_marker, write_plan
from workers.storage.local import LocalStore

STAMP = "stamp1"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(LocalStore(tmp_path / "store"), compress=False)


def make_set(store: ArtifactStore, days_ago: float, *, complete: bool = True, stamp: str = STAMP,
             set_id: str | None = None, plan: bool = True) -> str:
    """A backup set requested ``days_ago`` before NOW: plan, and either one artifact per planned component and a
    marker (complete) or only the secrets artifact (incomplete: the database never arrived)."""
    when = NOW - timedelta(days=days_ago)
    set_id = set_id or new_backup_set_id(when)
    if plan:
        write_plan(store.backend, Plan(stamp, set_id, ("secrets", "databases"), "schedule", when))
    stored = (("secrets", "SystemSecrets.json"), ("databases", "hosting.bak"))
    for component, name in stored if complete else stored[:1]:
        store.put(artifact_key(stamp, set_id, component, name), lambda: io.BytesIO(b"data " + set_id.encode()))
    write_manifest(store, stamp, set_id)
    if complete:
        write_marker(store.backend, stamp, set_id, {"completed_at": (when + timedelta(hours=1)).isoformat(),
                                                    "requested_at": when.isoformat()})
    return set_id


def keys(store: ArtifactStore) -> list[str]:
    return [info.key for info in store.backend.list()]


def sets_left(store: ArtifactStore, stamp: str = STAMP) -> set[str]:
    return {k.split("/")[1] for k in keys(store) if k.startswith(f"{stamp}/")}


def test_keep_last_keeps_the_newest_complete_sets_and_deletes_the_rest_entirely(store):
    # Given five complete sets, one a day
    ids = [make_set(store, days) for days in (5, 4, 3, 2, 1)]
    # When retention keeps the last two
    plan = apply_retention(store.backend, STAMP, keep_last=2, now=NOW)
    # Then the two newest survive, newest first, and nothing of the others is left
    assert plan.keep == [ids[4], ids[3]] and plan.delete == [ids[2], ids[1], ids[0]]
    assert sets_left(store) == {ids[3], ids[4]}
    assert plan.deleted_objects == 3 * 7   # 2 artifacts + 2 records + plan + manifest + marker
    assert "beyond the newest 2 complete sets" in plan.reasons[ids[0]]


def test_keep_within_keeps_every_recent_set_even_beyond_keep_last(store):
    # Given complete sets from 1 to 6 days ago
    ids = {days: make_set(store, days) for days in (6, 5, 4, 3, 2, 1)}
    # When one is kept by count but everything younger than 3.5 days by age
    plan = apply_retention(store.backend, STAMP, keep_last=1, keep_within=timedelta(days=3, hours=12), now=NOW)
    # Then the sets of the last 3.5 days are kept and the older ones deleted
    assert sets_left(store) == {ids[1], ids[2], ids[3]}
    assert plan.reasons[ids[2]] == "younger than 84h" and plan.reasons[ids[1]].startswith("newest complete")


def test_the_newest_complete_set_survives_keep_last_zero(store):
    # Given two complete sets and a keep_last of 0 with no keep_within
    old, new = make_set(store, 2), make_set(store, 1)
    # When retention runs
    plan = apply_retention(store.backend, STAMP, keep_last=0, now=NOW)
    # Then the newest complete set is kept whatever the settings
    assert plan.keep == [new] and plan.delete == [old]
    assert plan.reasons[new] == "newest complete set (always kept)"
    assert sets_left(store) == {new}


def test_incomplete_sets_are_deleted_only_when_older_than_the_newest_complete_set(store):
    # Given: an old complete set, an abandoned incomplete one, the newest complete one, and a running one
    old_complete = make_set(store, 4)
    abandoned = make_set(store, 3, complete=False)
    newest = make_set(store, 2)
    running = make_set(store, 0.1, complete=False)
    # When retention keeps only one complete set
    plan = apply_retention(store.backend, STAMP, keep_last=1, now=NOW)
    # Then the running set survives (it may still be going), the abandoned and the old ones do not
    assert set(plan.keep) == {newest, running} and set(plan.delete) == {old_complete, abandoned}
    assert "may still be running" in plan.reasons[running]
    assert plan.reasons[abandoned] == f"incomplete, older than the newest complete set {newest} and than the 6h " \
                                      "grace period"


def test_without_any_complete_set_nothing_is_deleted(store):
    # Given only incomplete sets (no catalog marker yet)
    ids = {make_set(store, days, complete=False) for days in (9, 5, 1)}
    # When retention runs with the strictest settings
    plan = apply_retention(store.backend, STAMP, keep_last=0, now=NOW)
    # Then every set is kept
    assert plan.delete == [] and sets_left(store) == ids


def test_dry_run_reports_the_plan_and_deletes_nothing(store):
    # Given three complete sets
    for days in (3, 2, 1):
        make_set(store, days)
    before = keys(store)
    # When retention runs as a dry run
    plan = apply_retention(store.backend, STAMP, keep_last=1, now=NOW, dry_run=True)
    # Then it names two sets to delete but the store is unchanged
    assert len(plan.delete) == 2 and plan.dry_run and plan.deleted_objects == 0
    assert all(line.startswith(("keep", "would delete")) for line in plan.describe())
    assert keys(store) == before


def test_keys_outside_backup_set_folders_are_never_touched(store):
    # Given old sets, and next to them secret versions, file-share blobs, a look-alike folder, another stamp
    old = make_set(store, 5)
    make_set(store, 1)
    foreign = [f"{STAMP}/secrets/v-20261101/SystemSecrets.json", f"{STAMP}/secrets/v-20261101/x.record.json",
               f"{STAMP}/fileshare-blobs/ab/abcdef0123", f"{STAMP}/{old}-copy/notes.txt", f"{STAMP}/README.txt"]
    for key in foreign:
        store.backend.put(key, io.BytesIO(b"keep me"))
    other_stamp = make_set(store, 9, stamp="stamp2")
    # When retention deletes everything it may
    plan = apply_retention(store.backend, STAMP, keep_last=0, now=NOW)
    # Then only the old set of this stamp went; everything else is still there
    assert plan.delete == [old]
    remaining = keys(store)
    assert all(key in remaining for key in foreign)
    assert any(key.startswith(f"stamp2/{other_stamp}/") for key in remaining)
    assert not any(key.startswith(f"{STAMP}/{old}/") for key in remaining)


def test_plan_timestamps_order_sets_whose_ids_carry_no_time(store):
    # Given sets with free-form ids: their plans say when they were requested
    older = make_set(store, 3, set_id="manual-a")
    newer = make_set(store, 1, set_id="manual-b")
    oldest = make_set(store, 5, set_id="zzz-by-name-last")
    # When retention keeps one
    plan = plan_retention(store.backend, STAMP, keep_last=1, now=NOW)
    # Then the order follows requested_at, not the names
    assert plan.keep == [newer] and plan.delete == [older, oldest]


class RecordingBackend:
    """Wraps a backend and records the order of deletes."""

    def __init__(self, inner) -> None:
        self.inner, self.deleted = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def delete(self, key: str) -> None:
        self.deleted.append(key)
        self.inner.delete(key)


def test_the_marker_goes_first_and_the_plan_last_so_half_deleted_sets_are_found_again(store):
    # Given a complete set
    set_id = make_set(store, 1)
    backend = RecordingBackend(store.backend)
    # When it is deleted
    delete_set(backend, STAMP, set_id)
    # Then the completion marker was deleted first and the plan last
    assert backend.deleted[0].endswith(COMPLETE) and backend.deleted[-1].endswith(PLAN)
    assert sets_left(store) == set()


def test_a_half_deleted_set_counts_as_incomplete_and_is_finished_by_the_next_run(store):
    # Given an old set whose deletion stopped after the marker and one artifact went
    old = make_set(store, 3)
    make_set(store, 1)
    store.backend.delete(f"{STAMP}/{old}/{COMPLETE}")
    store.backend.delete(f"{STAMP}/{old}/secrets/SystemSecrets.json")
    # When retention runs again
    plan = apply_retention(store.backend, STAMP, keep_last=7, now=NOW)
    # Then the remains are recognised as an incomplete, superseded set and removed
    assert plan.delete == [old] and old not in sets_left(store)


def test_negative_keep_last_is_refused(store):
    with pytest.raises(ValueError):
        plan_retention(store.backend, STAMP, keep_last=-1)
