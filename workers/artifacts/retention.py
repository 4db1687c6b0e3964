"""Retention: which backup sets of a stamp to keep, and deleting the others.

A set is *complete* when it has its ``complete.json`` marker, or when the store shows a plan and every planned
component's artifact records (see ``workers.artifacts.sets``): completeness is read from the store, never from
the order in which the catalog heard of the artifacts, so a busy catalog queue cannot make a fully stored set
look incomplete. Rules:

1. the newest complete set is always kept, whatever the settings (even ``keep_last=0``);
2. the newest ``keep_last`` complete sets are kept;
3. every set, complete or not, younger than ``keep_within`` is kept;
4. incomplete sets newer than the newest complete set are kept — they may still be running; with no
   complete set at all, nothing is deleted;
5. incomplete sets younger than ``incomplete_grace`` (default: the set deadline, 6 h) are kept — they may
   still complete;
6. a set whose age cannot be told is kept;
7. a set dated in the future (its id or plan more than ``FUTURE_SKEW`` ahead of the clock) is kept but ignored:
   it is never "newest", counts for nothing, and is reported with a warning (someone chose that date);
8. where signatures are checked, a set whose plan, marker or records do not verify is kept the same way: never
   counted as complete (a forged ``complete.json`` or record must not push genuine sets out of ``keep_last``)
   and never deleted (a set written before signing was enabled still restores with ``--allow-unsigned``).

Everything else is deleted: complete sets beyond ``keep_last``, and incomplete sets older than the newest complete
set and than the grace period, in both cases outside ``keep_within``. Every deletion is logged at WARNING with the
rule that chose it; the catalog also notifies the operator of each incomplete set deleted. A set's time is its
``requested_at`` (plan or marker), else the time in its id, else its completion time, else its newest object.
Deleting removes every object under ``<stamp>/<set>/`` and nothing else (``<stamp>/secrets/``,
``<stamp>/fileshare-blobs/`` and other folders that are not sets belong to their own workers). The marker goes
first, so a half-deleted set is never counted as complete; the plan and manifest go last, so a half-deleted set is
still found (and finished) by the next run.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

from workers.artifacts.records import read_record
from workers.artifacts.setmanifest import MANIFEST
from workers.artifacts.sets import COMPLETE, DEFAULT_DEADLINE, PLAN, Plan, read_marker, read_plan, set_prefix
from workers.artifacts.setscan import SetObjects, dated_in_future, scan_sets, set_time
from workers.runtime.errors import PermanentError
from workers.storage.base import StorageBackend, locked_until
from workers.storage.signing import trust_of

log = logging.getLogger("appsvc_dr.retention")


@dataclass(frozen=True)
class SetState:
    set_id: str
    time: datetime | None
    complete: bool
    planned: tuple[str, ...] | None = None   # the components its plan asks for (None: no plan)
    future: bool = False                     # dated ahead of the clock: ignored by every "newest" decision
    unverified: bool = False                 # its plan, marker or records do not verify: neither counted nor deleted

    @property
    def order(self) -> tuple[datetime, str]:
        return (self.time or datetime.min.replace(tzinfo=timezone.utc), self.set_id)


@dataclass
class RetentionPlan:
    stamp: str
    keep: list[str]                      # newest first
    delete: list[str]                    # newest first
    reasons: dict[str, str]              # set id -> why it is kept or deleted
    sets: dict[str, SetState] = field(default_factory=dict)
    dry_run: bool = False
    deleted_objects: int = 0
    locked: dict[str, datetime] = field(default_factory=dict)   # due sets kept: S3 Object Lock, deletable after

    @property
    def incomplete_deleted(self) -> list[str]:
        """Deleted (or, in a dry run, doomed) sets that were not complete: the operator is told of each."""
        return [s for s in self.delete if s in self.sets and not self.sets[s].complete]

    def describe(self) -> list[str]:
        lines = [f"keep   {s}  {self.reasons[s]}" for s in self.keep]
        verb = "would delete" if self.dry_run else "delete"
        return lines + [f"{verb} {s}  {self.reasons[s]}" for s in self.delete]


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def decide(stamp: str, states: list[SetState], *, keep_last: int = 7, keep_within: timedelta | None = None,
           now: datetime | None = None, incomplete_grace: timedelta = DEFAULT_DEADLINE) -> RetentionPlan:
    """Apply the rules to known set states (pure: no I/O)."""
    if keep_last < 0:
        raise ValueError("keep_last must be >= 0")
    now = now or datetime.now(timezone.utc)
    future = [s for s in states if s.future]
    unverified = [s for s in states if s.unverified and not s.future]
    ordered = sorted((s for s in states if not s.future and not s.unverified), key=lambda s: s.order, reverse=True)
    complete = [s for s in ordered if s.complete and s.time is not None]
    newest = complete[0] if complete else None
    cutoff = now - keep_within if keep_within else None
    reasons: dict[str, str] = {}

    def keep(state: SetState, why: str) -> None:
        reasons.setdefault(state.set_id, why)

    if newest is not None:
        keep(newest, "newest complete set (always kept)")
    for state in complete[:keep_last]:
        keep(state, f"one of the newest {keep_last} complete sets")
    for state in ordered:
        if state.time is None:
            keep(state, "age unknown")
        elif cutoff is not None and state.time >= cutoff:
            keep(state, f"younger than {format_duration(keep_within)}")  # type: ignore[arg-type]
        elif not state.complete and (newest is None or state.order > newest.order):
            keep(state, "incomplete, newer than the newest complete set (may still be running)")
        elif not state.complete and state.time >= now - incomplete_grace:
            keep(state, f"incomplete, younger than the {format_duration(incomplete_grace)} grace period (may "
                        "still complete)")
    for state in future:
        keep(state, "dated in the future: ignored (never the newest, never deleted automatically)")
        log.warning("retention: backup set %s/%s is dated in the future (%s): ignored, never counted as newest. "
                    "Sets are named by new_backup_set_id from a correct clock: find who wrote it (store access or "
                    "a host's clock), then remove <stamp>/<set>/ from the store by hand", stamp, state.set_id,
                    state.time.isoformat() if state.time else state.set_id)
    for state in unverified:
        keep(state, "not verified (its plan, marker or records are unsigned or forged): never counted as complete, "
                    "never deleted automatically")
        log.warning("retention: backup set %s/%s does not verify (its plan, marker or records are unsigned or "
                    "forged): kept, never counted as complete. A set written before signing was enabled restores "
                    "with --allow-unsigned; anything else was written by someone with access to the store: find "
                    "who, then remove <stamp>/<set>/ by hand", stamp, state.set_id)
    ordered = future + unverified + ordered
    kept = [s.set_id for s in ordered if s.set_id in reasons]
    doomed = [s for s in ordered if s.set_id not in reasons]
    newest_id = newest.set_id if newest else "-"      # incomplete sets are only doomed when a newest exists
    for state in doomed:
        reasons[state.set_id] = (f"complete, beyond the newest {keep_last} complete sets" if state.complete
                                 else f"incomplete, older than the newest complete set {newest_id} and than the "
                                      f"{format_duration(incomplete_grace)} grace period")
    return RetentionPlan(stamp, kept, [s.set_id for s in doomed], reasons, {s.set_id: s for s in states})


def set_states(backend: StorageBackend, stamp: str, now: datetime | None = None, *,
               signed_markers: bool = False) -> list[SetState]:
    """Every backup set of ``stamp`` with its time, whether it is complete (marker, or plan + every planned
    component's records in the listing) and its planned components (one listing, small reads: the marker when the
    plan does not tell the time or it must verify).
    ``signed_markers`` (retention's deletions): where signatures are checked, a marker completes a set only when
    it verifies, and so do the artifacts a plan asks for only when their records verify, so a forged
    ``complete.json`` or record never pushes genuine sets out of keep_last."""
    states = []
    verifies = signed_markers and trust_of(backend).verifies
    for set_id, found in scan_sets(backend, stamp).items():
        names = found.names
        plan = read_plan(backend, stamp, set_id) if PLAN in names else None
        needs_marker = COMPLETE in names and (verifies or plan is None or plan.requested_at is None)
        marker = read_marker(backend, stamp, set_id) if needs_marker else None
        when = set_time(set_id, plan, marker, found.objects)
        complete, unverified = _completeness(backend, found, plan, marker, verifies)
        states.append(SetState(set_id, when, complete, plan.components if plan else None,
                               future=dated_in_future(set_id, when, now), unverified=unverified))
    return states


def _completeness(backend: StorageBackend, found: SetObjects, plan: Plan | None, marker: dict | None,
                  verifies: bool) -> tuple[bool, bool]:
    """(complete, unverified) for one set: complete by its marker, or by its plan and every planned artifact
    stored; where signatures are checked (``verifies``) only a marker, plan and records that verify count, and a
    set that would be complete but for what did not verify is ``unverified`` (kept, never counted: rule 8)."""
    names = found.names
    listed = plan is not None and not plan.missing(found.stored_counts)
    if not verifies:
        return COMPLETE in names or listed, False
    if marker is not None or (listed and not plan.missing(found.counts(_trusted(backend)))):  # type: ignore[union-attr]
        return True, False
    return False, (PLAN in names and plan is None) or COMPLETE in names or listed


def _trusted(backend: StorageBackend) -> Callable[[str], bool]:
    """Whether an artifact's record verifies (read through the Trust); why not is warned."""
    def trusted(key: str) -> bool:
        try:
            return read_record(backend, key) is not None
        except PermanentError as exc:                   # unsigned, forged, moved or damaged: stores nothing
            log.warning("retention: %s does not count as stored: %s", key, exc.message)
            return False
    return trusted


def plan_retention(backend: StorageBackend, stamp: str, keep_last: int = 7, keep_within: timedelta | None = None,
                   now: datetime | None = None, incomplete_grace: timedelta = DEFAULT_DEADLINE) -> RetentionPlan:
    return decide(stamp, set_states(backend, stamp, now, signed_markers=True), keep_last=keep_last,
                  keep_within=keep_within, now=now, incomplete_grace=incomplete_grace)


def _keep_locked(backend: StorageBackend, plan: RetentionPlan) -> None:
    """Never try to delete a locked object: a doomed set with an object under S3 Object Lock is kept, saying
    until when (``plan.locked``); the first run after that date deletes it."""
    if getattr(backend, "lock_mode", None) is None:
        return
    for set_id in list(plan.delete):
        until = locked_until(backend, [i.key for i in backend.list(set_prefix(plan.stamp, set_id))])
        if until is None:
            continue
        plan.locked[set_id] = until
        plan.delete.remove(set_id)
        plan.keep.append(set_id)
        plan.reasons[set_id] = (f"due for deletion ({plan.reasons[set_id]}) but locked (S3 Object Lock) until "
                                f"{until:%Y-%m-%d %H:%M} UTC: deleted by the first run after that")
        log.warning("retention: %s/%s %s", plan.stamp, set_id, plan.reasons[set_id])


def delete_set(backend: StorageBackend, stamp: str, set_id: str) -> int:
    """Delete every object under ``<stamp>/<set_id>/``: marker first, plan and manifest last."""
    if not set_id or "/" in set_id or set_id in (".", ".."):
        raise ValueError(f"not a backup-set id: {set_id!r}")
    prefix = set_prefix(stamp, set_id)
    keys = [info.key for info in backend.list(prefix) if info.key.startswith(prefix)]
    last = {prefix + MANIFEST: 1, prefix + PLAN: 2}
    ordered = sorted(keys, key=lambda k: (-1 if k == prefix + COMPLETE else last.get(k, 0), k))
    for key in ordered:
        backend.delete(key)
    return len(ordered)


def apply_retention(backend: StorageBackend, stamp: str, keep_last: int = 7, keep_within: timedelta | None = None,
                    now: datetime | None = None, dry_run: bool = False,
                    incomplete_grace: timedelta = DEFAULT_DEADLINE) -> RetentionPlan:
    """Plan, then (unless ``dry_run``) delete the sets the plan names. Returns the plan."""
    plan = plan_retention(backend, stamp, keep_last, keep_within, now, incomplete_grace)
    plan.dry_run = dry_run
    _keep_locked(backend, plan)
    for set_id in plan.delete:
        if dry_run:
            log.debug("retention (dry run): would delete %s/%s: %s", stamp, set_id, plan.reasons[set_id])
            continue
        count = delete_set(backend, stamp, set_id)
        plan.deleted_objects += count
        log.warning("retention: deleted %s %s/%s (%d objects): %s", "complete set" if plan.sets[set_id].complete
                    else "INCOMPLETE set", stamp, set_id, count, plan.reasons[set_id])
    return plan
