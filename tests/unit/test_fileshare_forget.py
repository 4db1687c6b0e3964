"""Forget policy (pure, and with backup sets in a LocalStore) and repository locks."""
from __future__ import annotations

import io
import json
import logging
import os
import socket
from datetime import datetime, timedelta, timezone

import pytest

from contracts import BackupDue, BackupDuePayload, new_backup_set_id
from tests.unit.forge import plan_set
from tests.unit.test_catalog_handler import backup_due, old_complete_set, stored
from tests.unit.test_fileshare_trees import make_tree
from workers.artifacts.service import ArtifactStore
from workers.artifacts.sets import Plan, write_marker, write_plan
from workers.artifacts.settings import RetentionSettings
from workers.catalog.handler import CatalogHandler
from workers.config import load_settings
from workers.fileshare.handler import FileshareHandler
from workers.repository.forget import Policy, Snapshot, decide_snapshots, forget
from workers.repository.lock import LockLost, RepoLock, RepositoryLocked, read_locks, unlock
from workers.repository.repo import Repository
from workers.runtime.worker import JobContext
from workers.storage.local import LocalStore

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
CTX = JobContext("fileshare", "fileshare:1", 0, logging.LoggerAdapter(logging.getLogger("test"), {}))
COUNTS = {"partial": False, "files": 0, "dirs": 0, "bytes": 0, "new_bytes": 0}     # the rest of a summary


def snap(sid: str, hours_ago: float | None, group: str = "share", set_id: str | None = None) -> Snapshot:
    return Snapshot(sid, None if hours_ago is None else NOW - timedelta(hours=hours_ago), group, set_id or sid)


def test_keep_last_is_per_source_and_the_newest_is_always_kept():
    # Given two sources with three snapshots each
    snaps = [snap(f"a{i}", i, "share") for i in range(3)] + [snap(f"b{i}", i, "share (site)") for i in range(3)]
    # When the policy keeps the newest 2 / Then each source keeps its newest 2
    plan = decide_snapshots("stamp1", snaps, Policy(keep_last=2), now=NOW)
    assert sorted(plan.forget) == ["a2", "b2"] and plan.reasons["a2"] == "beyond the policy"
    # And keep-last 0 still keeps each source's newest
    plan = decide_snapshots("stamp1", snaps, Policy(keep_last=0), now=NOW)
    assert sorted(plan.keep) == ["a0", "b0"] and "always kept" in plan.reasons["a0"]


def test_daily_weekly_within_and_unknown_age():
    # Given two snapshots a day for ten days, and one whose time is unknown
    snaps = [snap(f"d{d}-{h}", d * 24 + h, set_id=None) for d in range(10) for h in (0, 6)] + [snap("x", None)]
    # When keeping 3 days / Then the newest snapshot of each of the last three days stays
    plan = decide_snapshots("stamp1", snaps, Policy(keep_last=0, keep_daily=3), now=NOW)
    assert set(plan.keep) == {"d0-0", "d1-0", "d2-0", "x"} and plan.reasons["x"] == "age unknown"
    # When keeping 2 ISO weeks (NOW is a Sunday: its week and the one before)
    plan = decide_snapshots("stamp1", snaps, Policy(keep_last=0, keep_weekly=2), now=NOW)
    assert set(plan.keep) == {"d0-0", "d7-0", "x"}
    # When keeping everything younger than 30 h
    plan = decide_snapshots("stamp1", snaps, Policy(keep_last=0, keep_within=timedelta(hours=30)), now=NOW)
    assert set(plan.keep) == {"d0-0", "d0-6", "d1-0", "d1-6", "x"} and "younger than" in plan.reasons["d1-6"]


def test_snapshots_of_backup_sets_retention_keeps_are_kept():
    # Given an old snapshot whose set retention keeps (say: an incomplete set still being assembled)
    snaps = [snap("new", 1), snap("old", 50, set_id="set-running")]
    plan = decide_snapshots("stamp1", snaps, Policy(keep_last=1), now=NOW,
                            kept_sets={"set-running": "incomplete (may still be running)"})
    # Then it is kept, with the set's reason
    assert plan.keep == ["new", "old"] and "may still be running" in plan.reasons["old"]


def test_forget_never_removes_the_snapshot_of_a_set_still_being_assembled(tmp_path):
    # Given complete sets A, B and a newer incomplete set C (databases still running), each with a snapshot,
    # and a newer manual snapshot M of no set
    store = ArtifactStore(LocalStore(tmp_path / "store"))
    repo = Repository(store, "stamp1")
    for i, (set_id, complete) in enumerate((("20261101T010000Z-0000000a", True), ("20261102T010000Z-0000000b", True),
                                           ("20261103T010000Z-0000000c", False), ("manual", None))):
        when = datetime(2026, 11, 1 + i, 1, tzinfo=timezone.utc)
        if complete is not None:
            write_plan(store.backend, Plan("stamp1", set_id, ("fileshare", "databases"), "schedule", when))
        if complete:
            write_marker(store.backend, "stamp1", set_id, {"completed_at": when.isoformat()})
        repo.put_summary(set_id, {"snapshot_id": set_id, "backup_set_id": set_id, "source": "share",
                                  "sub_path": None, "created_at": when.isoformat(), **COUNTS})
    # When keeping only the newest snapshot
    plan = forget(repo, Policy(keep_last=1), now=NOW)
    # Then M (newest), C (its set is being assembled) and B (newest complete set) stay; A goes
    assert plan.forget == ["20261101T010000Z-0000000a"]
    assert "may still be running" in plan.reasons["20261103T010000Z-0000000c"]
    assert "newest complete set" in plan.reasons["20261102T010000Z-0000000b"]
    assert {s["snapshot_id"] for s in repo.summaries()} == set(plan.keep) and len(plan.keep) == 3


# ----------------------------------------------------------------------------------------------- locks
@pytest.fixture
def backend(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_syncs_share_the_repository_and_a_prune_excludes_them_naming_the_holder(backend):
    # Given two syncs holding shared locks
    with RepoLock(backend, "stamp1", "sync", holder="worker A"), RepoLock(backend, "stamp1", "sync", holder="B"):
        assert len(read_locks(backend, "stamp1")) == 2
        # When a prune tries / Then it is refused, naming a holder, and leaves no lock of its own
        with pytest.raises(RepositoryLocked) as refused:
            RepoLock(backend, "stamp1", "prune", holder="prune", exclusive=True).acquire()
        assert "sync lock of worker A" in refused.value.message or "sync lock of B" in refused.value.message
        assert "snapshots unlock" in refused.value.hint and len(read_locks(backend, "stamp1")) == 2
    # And the other way round: a sync is refused while a prune holds the lock
    with RepoLock(backend, "stamp1", "prune", holder="appsvc-dr snapshots prune", exclusive=True):
        with pytest.raises(RepositoryLocked, match="prune lock of appsvc-dr snapshots prune"):
            RepoLock(backend, "stamp1", "sync", holder="worker").acquire()
    assert read_locks(backend, "stamp1") == []


def test_stale_locks_are_ignored_and_taken_over(backend):
    # Given a lock last refreshed an hour ago and one of a process of this host that no longer exists
    old = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    for name, pid, refreshed in (("old", 1, old), ("dead", 2 ** 22 + 7, datetime.now(timezone.utc).isoformat())):
        body = {"kind": "sync", "exclusive": False, "holder": name, "host": "elsewhere" if name == "old" else
                socket.gethostname(), "pid": pid, "created_at": old, "refreshed_at": refreshed}
        backend.put(f"stamp1/fileshare/locks/{name}.json", io.BytesIO(json.dumps(body).encode()))
    # When a prune takes the lock / Then both are removed as stale
    with RepoLock(backend, "stamp1", "prune", holder="prune", exclusive=True) as lock:
        assert sorted(s.holder for s in lock.removed_stale) == ["dead", "old"]
    assert read_locks(backend, "stamp1") == []


def test_a_holder_whose_lock_was_removed_learns_it_before_committing(backend):
    # Given a sync holding its lock, refreshed often
    lock = RepoLock(backend, "stamp1", "sync", holder="worker", refresh_every=timedelta(seconds=0.05)).acquire()
    lock.check()
    # When someone removes every lock / Then check() says the lock is lost, and it is not written back
    assert [x.holder for x in unlock(backend, "stamp1", everything=True)] == ["worker"]
    with pytest.raises(LockLost):
        lock.check()
    lock._stop.wait(0.2)
    assert read_locks(backend, "stamp1") == []
    lock.release()


def test_a_backup_is_retried_while_a_prune_holds_the_repository(tmp_path, backend):
    # Given a prune holding the exclusive lock
    make_tree(tmp_path / "src")
    settings = load_settings(fileshare={"source": str(tmp_path / "src"), "cache_dir": str(tmp_path / "cache")})
    handler = FileshareHandler(settings.fileshare, settings.retention, ArtifactStore(backend))
    due = BackupDue(source="t", stamp="stamp1", correlation_id="set-x",
                    payload=BackupDuePayload(backup_set_id="set-x", components=("fileshare",)))
    plan_set(backend, "set-x", "fileshare")   # as the catalog does first
    with RepoLock(backend, "stamp1", "prune", holder="appsvc-dr snapshots prune", exclusive=True):
        # When a backup is due / Then it fails transiently (retried with backoff), nothing stored
        with pytest.raises(RepositoryLocked) as refused:
            handler.backup_due(due, CTX)
        assert "appsvc-dr snapshots prune" in refused.value.message
        assert list(backend.list("stamp1/fileshare/packs/")) == []
    # And once the prune is done the retry goes through, leaving no lock behind
    synced = handler.backup_due(due, CTX)[0]
    assert synced.payload.files == 47 and read_locks(backend, "stamp1") == []


def test_the_catalog_forgets_the_snapshots_of_the_sets_its_retention_deletes(tmp_path, caplog):
    # Given two older complete sets with a snapshot each, and retention keeping one set
    store = ArtifactStore(LocalStore(tmp_path / "store"), compress=False)
    repo = Repository(store, "stamp1")
    sets = [old_complete_set(store, days) for days in (2, 1)]
    new = new_backup_set_id()
    for i, set_id in enumerate([*sets, new]):
        repo.put_summary(set_id, {"snapshot_id": set_id, "backup_set_id": set_id, "source": "share",
                                  "sub_path": None, "created_at": f"2026-11-2{i}T00:00:00+00:00", **COUNTS})
    h = CatalogHandler(RetentionSettings(keep_last=1), store)
    h.backup_due(backup_due(new, "secrets"), CTX)
    # When the new set completes
    with caplog.at_level(logging.INFO):
        h.artifact_stored(stored(store, new, "secrets", "SystemSecrets.json"), CTX)
    # Then the older sets are deleted and their snapshots forgotten, and the log says prune frees the data
    assert [s["snapshot_id"] for s in repo.summaries()] == [new]
    assert "forgot 2 file-share snapshot(s)" in caplog.text and "snapshots prune" in caplog.text


@pytest.mark.parametrize("forged", [
    {"refreshed_at": "2026-01-01T00:00:00"},                 # no time zone: cannot be compared
    {"pid": 2 ** 80}, {"pid": -1}, {"pid": "12"}, {"exclusive": "false"},
    {"holder": "x" * 10_000}, {"host": "evil\nhost"}, {"kind": None},
])
def test_a_forged_lock_is_shown_as_unreadable_and_never_breaks_the_reader(backend, forged):
    # Given a lock object with one hostile field
    now = datetime.now(timezone.utc).isoformat()
    body = {"kind": "sync", "exclusive": False, "holder": "w", "host": "elsewhere", "pid": 7, "created_at": now,
            "refreshed_at": now} | forged
    backend.put("stamp1/fileshare/locks/forged.json", io.BytesIO(json.dumps(body).encode()))
    # When the locks are read / Then it is an exclusive lock of "unknown" dated at its object's time
    [lock] = read_locks(backend, "stamp1")
    assert (lock.holder, lock.exclusive, lock.pid) == ("unknown (unreadable lock)", True, 0)
    # And a sync is refused until it goes stale, naming it; `unlock` (stale only) leaves it for now
    with pytest.raises(RepositoryLocked, match="unknown"):
        RepoLock(backend, "stamp1", "sync", holder="worker").acquire()
    assert unlock(backend, "stamp1") == []


def test_a_lock_claiming_a_future_refresh_goes_stale_from_when_it_was_written(backend):
    # Given a lock written two hours ago by the store's clock that claims to be refreshed next year
    future = (datetime.now(timezone.utc) + timedelta(days=365)).isoformat()
    body = {"kind": "prune", "exclusive": True, "holder": "forger", "host": "elsewhere", "pid": 7,
            "created_at": future, "refreshed_at": future}
    backend.put("stamp1/fileshare/locks/future.json", io.BytesIO(json.dumps(body).encode()))
    two_hours_ago = datetime.now(timezone.utc).timestamp() - 7200
    os.utime(backend.root / "stamp1/fileshare/locks/future.json", (two_hours_ago, two_hours_ago))
    # When the locks are read / Then its freshness is the object's time, not the claim
    [lock] = read_locks(backend, "stamp1")
    assert lock.holder == "forger" and lock.refreshed_at < datetime.now(timezone.utc) - timedelta(hours=1)
    # And a sync goes ahead (it is stale), and unlock removes it as stale
    with RepoLock(backend, "stamp1", "sync", holder="worker"):
        pass
    assert [x.holder for x in unlock(backend, "stamp1")] == ["forger"]
