"""Job leases and done records on a real (local) store: one holder per job, duplicates refused, stale leases taken
over, racing claimants never both win, and a done job's follow-ups re-made with ids derived from the new cause."""
from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone

import pytest

from contracts import (ArtifactReady, ArtifactReadyPayload, BackupDue, BackupDuePayload, DatabaseBackedUp,
                       DatabaseBackedUpPayload)
from workers.artifacts.jobs import (LEASE_SUFFIX, MAX_TTL, JobKey, JobLease, JobLeaseLost, JobRunning, done_body,
                                    follow_up, read_leases, replay, store_prefix)
from workers.artifacts.setscan import scan_sets
from workers.artifacts.setmanifest import list_sets
from workers.runtime.errors import DuplicateJob
from workers.storage.local import LocalStore

KEY = JobKey("stamp1", "20261203T010000Z-0badcafe", "databases", "orders.dump")
PREFIX = store_prefix(KEY)


@pytest.fixture
def backend(tmp_path):
    return LocalStore(tmp_path / "store")


def lease(backend, job="db-backup:event-1", **kw) -> JobLease:
    return JobLease(backend, PREFIX, job=job, what=str(KEY), **kw)


def write_lease(backend, *, host: str, pid: int, expires_at: datetime, job: str = "db-backup:gone") -> str:
    """A lease as a holder that is no longer there left it."""
    key = f"{PREFIX}left{LEASE_SUFFIX}"
    body = json.dumps({"format": 1, "job": job, "holder": "gone", "host": host, "pid": pid, "running": True,
                       "expires_at": expires_at.isoformat()}).encode()
    backend.put(key, io.BytesIO(body), size=len(body))
    return key


def test_the_store_prefix_lies_inside_the_set_and_leases_are_no_artifacts(backend):
    # Given a planned set with a job lease held in it
    backend.put(f"{KEY.stamp}/{KEY.set_id}/plan.json", io.BytesIO(b"{}"))
    with lease(backend):
        # Then the lease lies under the set (retention deletes it with the set) ...
        assert PREFIX.startswith(f"{KEY.stamp}/{KEY.set_id}/jobs/")
        found = scan_sets(backend, KEY.stamp)[KEY.set_id]
        assert any(o.key.endswith(LEASE_SUFFIX) for o in found.objects)
        # ... and counts as no artifact: no stored component, no set with artifacts
        assert found.stored_counts == {} and list(list_sets(backend, KEY.stamp)) == []
    # And releasing removes it
    assert read_leases(backend, PREFIX) == []


def test_another_event_for_a_running_job_is_a_duplicate(backend):
    # Given a job running under one event's lease
    with lease(backend, job="db-backup:event-1"):
        # When another event asks for the same job
        # Then it is a duplicate, and leaves no lease behind
        with pytest.raises(DuplicateJob, match="already runs for another event"):
            lease(backend, job="db-backup:event-2").acquire()
        assert len(read_leases(backend, PREFIX)) == 1


def test_the_same_event_redelivered_while_its_job_runs_waits_and_is_retried(backend):
    with lease(backend, job="db-backup:event-1") as first:
        # When the broker redelivers the same event (its first delivery's connection dropped)
        with pytest.raises(JobRunning) as caught:
            lease(backend, job="db-backup:event-1").acquire()
        # Then it is retried, until well past the running lease's expiry
        assert caught.value.until > datetime.now(timezone.utc) + first.ttl
    # And once the first released, the job may be claimed again
    with lease(backend, job="db-backup:event-1"):
        pass


def test_an_expired_lease_is_taken_over(backend):
    # Given a lease whose holder (on another host) stopped refreshing it
    left = write_lease(backend, host="elsewhere", pid=1, expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))
    # When the job is claimed
    with lease(backend) as mine:
        # Then the claimant takes over, removing the stale lease
        assert [t.key for t in mine.taken_over] == [left] and not backend.exists(left)


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over_before_it_expires(backend):
    # Given a lease held by a process of this host that has exited
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_lease(backend, host=socket.gethostname(), pid=int(proc.stdout),
                expires_at=datetime.now(timezone.utc) + timedelta(hours=1))
    # Then the job is taken over at once
    with lease(backend) as mine:
        assert len(mine.taken_over) == 1


def test_a_live_lease_elsewhere_is_not_taken_over(backend):
    write_lease(backend, host="elsewhere", pid=1, expires_at=datetime.now(timezone.utc) + timedelta(hours=1))
    with pytest.raises(DuplicateJob):
        lease(backend).acquire()


def test_racing_claimants_never_both_win(backend):
    # Given eight deliveries of eight different events claiming the same job at the same moment, five times over
    for _ in range(5):
        winners, errors = [], []
        barrier = threading.Barrier(8)
        release = threading.Event()

        def claim(i: int) -> None:
            barrier.wait()
            try:
                with lease(backend, job=f"db-backup:event-{i}"):
                    winners.append(i)
                    release.wait(5)
            except DuplicateJob:
                errors.append(i)

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for _ in range(600):                  # until each has won (and holds on) or been refused
            if len(winners) + len(errors) == 8:
                break
            threading.Event().wait(0.05)
        release.set()
        for t in threads:
            t.join(30)
        # Then exactly one ran, the others were duplicates, and no lease is left
        assert len(winners) == 1 and len(errors) == 7
        assert read_leases(backend, PREFIX) == []


def test_a_lease_is_refreshed_while_the_job_runs_and_check_sees_a_takeover(backend):
    with lease(backend, ttl=timedelta(seconds=0.8)) as mine:
        first = read_leases(backend, PREFIX)[0].expires_at
        threading.Event().wait(0.5)
        # Then the lease's expiry moved on while the job ran
        assert read_leases(backend, PREFIX)[0].expires_at > first
        mine.check()
        # When someone removes it (took it over as stale)
        backend.delete(mine.key)
        # Then the holder learns it lost the job
        with pytest.raises(JobLeaseLost):
            mine.check()


def test_a_done_record_re_makes_the_follow_ups_for_a_new_cause_with_derived_ids():
    due = BackupDue(source="t", stamp="stamp1", correlation_id=KEY.set_id,
                    payload=BackupDuePayload(backup_set_id=KEY.set_id))
    ready = follow_up(due, ArtifactReady, ArtifactReadyPayload(component="databases", name="orders.dump",
                                                               staged_path="/s/x", size=3, sha256="ab" * 32),
                      source="worker:db-backup")
    backed = follow_up(due, DatabaseBackedUp, DatabaseBackedUpPayload(
        database="orders", engine="postgres", server="pg:5432", size=3, duration_seconds=1.5), source="w")
    record = json.loads(done_body([ready, backed]))
    # When the same cause replays: the very same events (same ids)
    again = replay(due, record, [ArtifactReady, DatabaseBackedUp], source="worker:db-backup")
    assert [(e.event_id, e.payload) for e in again] == [(ready.event_id, ready.payload),
                                                        (backed.event_id, backed.payload)]
    # When another cause replays: the same payloads under new ids, caused by it
    other = BackupDue(source="t", stamp="stamp1", correlation_id=KEY.set_id,
                      payload=BackupDuePayload(backup_set_id=KEY.set_id))
    moved = replay(other, record, [ArtifactReady, DatabaseBackedUp], source="worker:db-backup")
    assert [e.payload for e in moved] == [ready.payload, backed.payload]
    assert {e.event_id for e in moved}.isdisjoint({ready.event_id, backed.event_id})
    assert all(e.causation_id == other.event_id for e in moved)


def test_a_lease_dated_far_ahead_lives_at_most_an_hour_after_the_store_wrote_it(backend):
    # Given a lease (forged, or from a host whose clock runs years ahead) that claims to last until 2099,
    # held by a process on another host (so it cannot be seen to be dead)
    write_lease(backend, host="elsewhere", pid=4242, expires_at=datetime(2099, 1, 1, tzinfo=timezone.utc),
                job="db-backup:event-1")
    [found] = read_leases(backend, PREFIX)
    # Then it counts as expiring an hour after it was written, not in 2099: the job is not held for ever
    assert found.expires_at <= datetime.now(timezone.utc) + MAX_TTL
    assert not found.live(datetime.now(timezone.utc) + MAX_TTL + timedelta(seconds=1))


@pytest.mark.parametrize("pid", [2**70, -1, "4242", 0])
def test_a_lease_with_an_impossible_pid_is_skipped_with_a_warning(backend, caplog, pid):
    write_lease(backend, host=socket.gethostname(), pid=pid, expires_at=datetime.now(timezone.utc))  # type: ignore
    assert read_leases(backend, PREFIX) == []
    assert "ignoring unreadable job lease" in caplog.text


def test_a_lease_longer_than_the_cap_is_refused_when_configured(backend):
    with pytest.raises(ValueError, match="between 0 and"):
        lease(backend, ttl=MAX_TTL + timedelta(seconds=1))
