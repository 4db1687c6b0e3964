"""Retention: which backup sets of a stamp to keep, and deleting the others.

Rules (a set is *complete* when it has its ``complete.json`` marker, see ``workers.artifacts.sets``):

1. the newest complete set is always kept, whatever the settings (even ``keep_last=0``);
2. the newest ``keep_last`` complete sets are kept;
3. every set, complete or not, younger than ``keep_within`` is kept;
4. incomplete sets newer than the newest complete set are kept — they may still be running; with no
   complete set at all, nothing is deleted;
5. a set whose age cannot be told is kept.

Everything else is deleted: complete sets beyond ``keep_last``, and incomplete sets older than the newest
complete set, in both cases outside ``keep_within``. A set's time is its ``requested_at`` (plan or marker),
else the time in its id, else its completion time, else its newest object. Deleting removes every object
under ``<stamp>/<set>/`` and nothing else (``<stamp>/secrets/``, ``<stamp>/fileshare-blobs/`` and other
folders that are not sets belong to their own workers). The marker goes first, so a half-deleted set is
never counted as complete; the plan and manifest go last, so a half-deleted set is still found (and
finished) by the next run.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from workers.artifacts.catalog import MANIFEST
from workers.artifacts.sets import COMPLETE, PLAN, read_marker, read_plan, scan_sets, set_prefix, set_time
from workers.storage.base import StorageBackend

log = logging.getLogger("appsvc_dr.retention")


@dataclass(frozen=True)
class SetState:
    set_id: str
    time: datetime | None
    complete: bool
    planned: tuple[str, ...] | None = None   # the components its plan asks for (None: no plan)

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
           now: datetime | None = None) -> RetentionPlan:
    """Apply the rules to known set states (pure: no I/O)."""
    if keep_last < 0:
        raise ValueError("keep_last must be >= 0")
    now = now or datetime.now(timezone.utc)
    ordered = sorted(states, key=lambda s: s.order, reverse=True)
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
    kept = [s.set_id for s in ordered if s.set_id in reasons]
    doomed = [s for s in ordered if s.set_id not in reasons]
    newest_id = newest.set_id if newest else "-"      # incomplete sets are only doomed when a newest exists
    for state in doomed:
        reasons[state.set_id] = (f"complete, beyond the newest {keep_last} complete sets" if state.complete
                                 else f"incomplete, older than the newest complete set {newest_id}")
    return RetentionPlan(stamp, kept, [s.set_id for s in doomed], reasons, {s.set_id: s for s in states})


def set_states(backend: StorageBackend, stamp: str) -> list[SetState]:
    """Every backup set of ``stamp`` with its time, whether it is complete and its planned components (one
    listing, small reads: the marker only when the plan does not tell the time)."""
    states = []
    for set_id, found in scan_sets(backend, stamp).items():
        names = found.names
        plan = read_plan(backend, stamp, set_id) if PLAN in names else None
        needs_marker = COMPLETE in names and (plan is None or plan.requested_at is None)
        marker = read_marker(backend, stamp, set_id) if needs_marker else None
        states.append(SetState(set_id, set_time(set_id, plan, marker, found.objects), COMPLETE in names,
                               plan.components if plan else None))
    return states


def plan_retention(backend: StorageBackend, stamp: str, keep_last: int = 7, keep_within: timedelta | None = None,
                   now: datetime | None = None) -> RetentionPlan:
    return decide(stamp, set_states(backend, stamp), keep_last=keep_last, keep_within=keep_within, now=now)


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
                    now: datetime | None = None, dry_run: bool = False) -> RetentionPlan:
    """Plan, then (unless ``dry_run``) delete the sets the plan names. Returns the plan."""
    plan = plan_retention(backend, stamp, keep_last, keep_within, now)
    plan.dry_run = dry_run
    for set_id in plan.delete:
        if dry_run:
            log.debug("retention (dry run): would delete %s/%s: %s", stamp, set_id, plan.reasons[set_id])
            continue
        count = delete_set(backend, stamp, set_id)
        plan.deleted_objects += count
        log.info("retention: deleted %s/%s (%d objects): %s", stamp, set_id, count, plan.reasons[set_id])
    return plan
