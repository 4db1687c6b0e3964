"""The mirror and the fallback store with what the set lifecycle, exactly-once jobs, the scheduler and `recover`
write into the store: what a restore from the secondary needs is copied (lifecycle markers, recoveries' state,
rewritten in place), what only coordinates this site's processes is not (job leases, slot claims); leases and
claims are never Object-Locked; a command that writes through the fallback says how to work on a copy."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tests.unit.certs import signed
from tests.unit.test_mirror import KEEP_ALL, primary  # noqa: F401 - fixture
from tests.unit.test_retention import STAMP, make_set
from workers.artifacts.jobs import JobKey, JobLease, store_prefix
from workers.artifacts.lifecycle import FAILED, write_terminal
from workers.catalog.lifecycle import remember_stamp, stored_stamps
from workers.mirror.sync import compare, sync
from workers.recover.state import RUNNING, Recovery, StepState, load, new_id, now, save, state_key
from workers.runtime.errors import DrError
from workers.scheduler.slots import SlotBook, claim_key
from workers.storage.base import UNLOCKED
from workers.storage.fallback import FallbackStore
from workers.storage.local import LocalStore

SLOT = datetime(2026, 12, 3, 2, 0, tzinfo=timezone.utc)


def test_lifecycle_markers_and_recoveries_are_mirrored_leases_and_slot_claims_never(primary, tmp_path):
    # Given a complete set, a failed set, the stamp's index entry, a recovery's state, a slot claim, and a job
    # lease held on the primary
    done, failed = make_set(primary, 2), make_set(primary, 1, complete=False)
    remember_stamp(primary.backend, STAMP)
    write_terminal(primary.backend, STAMP, failed, FAILED, {"writer": "test", "reason": "dead-lettered"})
    recovery = Recovery(new_id(), STAMP, done, now(), {}, [StepState("db", "database")])
    save(primary.backend, recovery)
    assert SlotBook(primary.backend, STAMP).claim("daily", SLOT, done, "schedule").won
    target = LocalStore(tmp_path / "target")
    lease_prefix = store_prefix(JobKey(STAMP, failed, "databases", "hosting.bak"))
    with JobLease(primary.backend, lease_prefix, job="db-backup:1", what="hosting.bak") as lease:
        assert primary.backend.exists(lease.key)
        # When the target is synced
        sync(primary.backend, target, STAMP, KEEP_ALL)
    # Then the failed marker, the stamp's index entry and the recovery's state are there (a restore, `status` or
    # `recover status` from the copy sees them), and no lease or slot claim is
    on_target = {i.key for i in target.list(f"{STAMP}/")}
    assert stored_stamps(target) == {STAMP}
    assert f"{STAMP}/{failed}/failed.json" in on_target and state_key(STAMP, recovery.recovery_id) in on_target
    assert f"{STAMP}/{done}/complete.json" in on_target
    assert not [k for k in on_target if "/jobs/" in k or k.startswith(f"{STAMP}/schedule/")]
    assert claim_key(STAMP, "daily", SLOT) in {i.key for i in primary.backend.list(f"{STAMP}/")}
    # And a second run finds nothing more to copy
    assert compare(primary.backend, target, STAMP, KEEP_ALL).missing == []


def test_a_recovery_state_rewritten_with_the_same_size_is_copied_again(primary, tmp_path):
    # Given a recovery's state (signed: a recovery state is never read unsigned) mirrored to a target
    set_id = make_set(primary, 1)
    signed(primary.backend, tmp_path)
    recovery = Recovery(new_id(), STAMP, set_id, now(), {}, [StepState("db", "database")])
    save(primary.backend, recovery)
    target = LocalStore(tmp_path / "target")
    sync(primary.backend, target, STAMP, KEEP_ALL)
    key = state_key(STAMP, recovery.recovery_id)
    size = primary.backend.stat(key).size
    # When the recovery moves on ("pending" -> "running": the same number of bytes) and is saved again
    recovery.steps[0].status = RUNNING
    recovery.updated_at = None
    save(primary.backend, recovery)
    assert primary.backend.stat(key).size == size
    # Then the target's copy differs, is copied again, and then reads as the primary's
    assert [i.key for i in compare(primary.backend, target, STAMP, KEEP_ALL).missing] == [key]
    assert sync(primary.backend, target, STAMP, KEEP_ALL).copied == 1
    assert load(signed(target, tmp_path), STAMP, recovery.recovery_id).steps[0].status == RUNNING


def test_leases_and_slot_claims_are_written_without_an_object_lock(primary):
    # Given a store without exclusive create (a FallbackStore over the primary), as S3 is
    claims = SlotBook(FallbackStore(primary.backend, [("dr-site", primary.backend)]), STAMP)
    assert claims.claim("daily", SLOT, "set", "schedule").won
    # Then the claim, and a job lease while held, carry the metadata that keeps S3 from locking them
    assert primary.backend.stat(claim_key(STAMP, "daily", SLOT)).metadata == UNLOCKED
    with JobLease(primary.backend, f"{STAMP}/set/jobs/databases/db/", job="j", what="db") as lease:
        assert primary.backend.stat(lease.key).metadata == UNLOCKED


def test_a_write_through_the_fallback_when_the_primary_is_lost_names_store(primary, tmp_path):
    # Given the fallback over a primary whose folder is gone and a mirror target
    set_id = make_set(primary, 1)
    lost = FallbackStore(LocalStore(tmp_path / "gone", create=False), [("dr-site", primary.backend)])
    # When recover saves its state through it
    with pytest.raises(DrError) as raised:
        save(lost, Recovery(new_id(), STAMP, set_id, now(), {}, []))
    # Then nothing is written to the copy behind its back, and the fix says to pick one copy
    assert "--store NAME (dr-site)" in raised.value.hint
    assert not list(primary.backend.list(f"{STAMP}/recoveries/"))
