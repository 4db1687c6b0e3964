"""What retention deleted, told: a warning per incomplete set, and the file-share snapshots of deleted sets.

Retention deletes an incomplete set only when it is older than the newest complete set and than the grace
period (see :mod:`workers.artifacts.retention`): by then it will not complete, but a recovery point the
operator asked for is gone, so each one is told with a ``job-failed`` warning (worker ``catalog``, error class
``IncompleteSetDeleted``, ``will_retry`` false) carrying the deleted set's id as its correlation id, and an
event id derived from stamp and set (a redelivered event re-applies retention, which finds the set gone and
emits nothing; two replicas emitting it emit the same id).

A deleted set's file-share snapshot (``fileshare-blobs/snapshots/<set>*.json``) would otherwise stay behind,
listed by ``snapshots list`` for a set that no longer exists: it is forgotten with the set (its data is
freed by the next ``snapshots prune``).
"""
from __future__ import annotations

import uuid

from contracts import Envelope, JobFailed, JobFailedPayload
from workers.artifacts.retention import RetentionPlan
from workers.repository.forget import forget_snapshot, snapshots_of
from workers.repository.repo import Repository

ERROR_CLASS = "IncompleteSetDeleted"
_IDS = uuid.UUID("3a9d6c1e-7b42-4f0a-8e5d-2c6b1f9a7e30")


def deleted_warnings(event: Envelope, plan: RetentionPlan) -> list[Envelope]:
    """One ``job-failed`` warning per incomplete set that ``plan`` deleted."""
    out: list[Envelope] = []
    for set_id in plan.incomplete_deleted:
        state = plan.sets[set_id]
        planned = ", ".join(state.planned) if state.planned else "nothing (no plan)"
        out.append(event.follow_up(JobFailed, JobFailedPayload(
            worker="catalog", failed_event_id=event.event_id, failed_event_type=event.type,
            error_class=ERROR_CLASS,
            message=(f"retention deleted incomplete backup set {plan.stamp}/{set_id} (planned: {planned}; "
                     f"requested {state.time.isoformat() if state.time else 'at an unknown time'}): "
                     f"{plan.reasons[set_id]}")[:4000],
            attempts=1, will_retry=False, severity="warning",
            hint=("That recovery point never completed: check the job-failed notifications and dead-letter queues "
                  "of its workers (`appsvc-dr dlq list`) for why. Incomplete sets are kept for "
                  "APPSVC_DR_RETENTION__INCOMPLETE_GRACE (default: APPSVC_DR_RETENTION__SET_DEADLINE) and while "
                  "newer than the newest complete set.")[:2000]),
            source="worker:catalog", correlation_id=set_id, event_id=uuid.uuid5(_IDS, f"{plan.stamp}/{set_id}")))
    return out


def forget_snapshots_of(repo: Repository, set_ids: list[str]) -> list[str]:
    """Forget the file-share snapshots of the given (deleted) backup sets; their ids."""
    doomed = set(set_ids)
    found = [s.snapshot_id for s in snapshots_of(repo) if s.backup_set_id in doomed]
    for snapshot in found:
        forget_snapshot(repo, snapshot)
    return found
