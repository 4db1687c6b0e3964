"""The lifecycle of a backup set, read from the store: ``planned → in-progress → complete | failed | expired``.

Every state is recorded by a signed object under ``<stamp>/<set>/`` and carries its time, so any reader with
access to the store (the catalog after a restart, ``appsvc-dr status``, a second catalog replica) tells the
same story:

* ``planned`` — ``plan.json`` (its ``requested_at``);
* ``in-progress`` — the plan and at least one stored artifact or skip note (the time of the first one);
* ``complete`` — ``complete.json`` (``completed_at``); wins over everything below: a late artifact completes an
  expired or failed set, and the set counts as a recovery point again;
* ``failed`` — ``failed.json``, written once when a job of the set was dead-lettered (``failed_at``, the
  component, reason and how to fix);
* ``expired`` — ``expired.json``, written once when the set's deadline passed before it completed
  (``expired_at``, what was missing, the likely cause and how to fix).

The deadline of a set is its time (``requested_at``) plus the longest deadline of its planned components
(``RetentionSettings.deadline_for``). The catalog writes ``failed.json`` / ``expired.json`` with
:func:`write_terminal` (write once, then read back: only the writer whose body was kept notifies).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Mapping

from contracts.envelope import is_future
from workers.artifacts.sets import (COMPLETE, EXPIRED_FILE, FAILED_FILE, PLAN, Plan, parse_time, put_once, read_object,
                                    read_plan, read_skips, set_prefix, waiting_for)
from workers.artifacts.setscan import SetObjects, scan_sets, set_time
from workers.artifacts.setmanifest import BackupSet, read_set
from workers.artifacts.service import RECORD_SUFFIX, ArtifactStore
from workers.storage.base import StorageBackend

PLANNED, IN_PROGRESS, COMPLETE_STATE, FAILED, EXPIRED = "planned", "in-progress", "complete", "failed", "expired"
STATES = (PLANNED, IN_PROGRESS, COMPLETE_STATE, FAILED, EXPIRED)
OPEN_STATES = (PLANNED, IN_PROGRESS)
TERMINAL_FILES = {FAILED: FAILED_FILE, EXPIRED: EXPIRED_FILE}

DeadlineFor = Callable[[Iterable[str]], timedelta]


@dataclass
class SetStatus:
    """One backup set as the store shows it."""

    stamp: str
    set_id: str
    state: str
    requested_at: datetime | None
    deadline: datetime | None = None
    components: tuple[str, ...] = ()
    started_at: datetime | None = None       # first artifact or skip note
    completed_at: datetime | None = None
    ended_at: datetime | None = None         # completed, failed or expired
    waiting: list[str] = field(default_factory=list)   # what an open set waits for (filled by :func:`waiting`)
    detail: dict = field(default_factory=dict)         # failed.json / expired.json / complete.json body
    stored_bytes: int = 0

    @property
    def duration(self) -> float | None:
        """Seconds from request to completion (complete sets only)."""
        if self.completed_at and self.requested_at:
            return max((self.completed_at - self.requested_at).total_seconds(), 0.0)
        return None

    def overdue(self, now: datetime) -> bool:
        return self.state in OPEN_STATES and self.deadline is not None and now >= self.deadline

    def to_json(self) -> dict:
        def iso(t: datetime | None) -> str | None:
            return t.isoformat() if t else None
        return {"stamp": self.stamp, "backup_set_id": self.set_id, "state": self.state,
                "components": list(self.components), "requested_at": iso(self.requested_at),
                "started_at": iso(self.started_at), "deadline": iso(self.deadline),
                "completed_at": iso(self.completed_at), "ended_at": iso(self.ended_at), "waiting": self.waiting,
                "reason": self.detail.get("reason"), "hint": self.detail.get("hint"),
                "late": bool(self.detail.get("late")), "stored_bytes": self.stored_bytes}


def _key(found: SetObjects, name: str) -> str:
    return set_prefix(found.stamp, found.set_id) + name


def status_of(backend: StorageBackend, found: SetObjects, deadline_for: DeadlineFor) -> SetStatus | None:
    """The state of one set of a listing; None for a folder without a plan (never planned: not a set yet)."""
    names = found.names
    if PLAN not in names:
        return None
    plan = read_plan(backend, found.stamp, found.set_id)
    if plan is None:
        return None
    requested = set_time(found.set_id, plan, None, found.objects)
    status = SetStatus(found.stamp, found.set_id, PLANNED, requested, components=plan.components,
                       deadline=requested + deadline_for(plan.components) if requested else None)
    produced = [o.modified for o in found.objects
                if o.key.endswith(RECORD_SUFFIX) or "/skipped/" in o.key]
    status.started_at = min(produced, default=None)
    status.stored_bytes = sum(o.size for o in found.objects)
    if status.started_at:
        status.state = IN_PROGRESS
    if COMPLETE in names:
        marker = read_object(backend, _key(found, COMPLETE))
        if marker is not None:
            status.state, status.detail = COMPLETE_STATE, marker
            status.completed_at = status.ended_at = parse_time(marker.get("completed_at"))
            return status
    for state in (FAILED, EXPIRED):
        if TERMINAL_FILES[state] in names:
            body = read_object(backend, _key(found, TERMINAL_FILES[state]))
            if body is not None:
                status.state, status.detail = state, body
                status.ended_at = parse_time(body.get(f"{state}_at"))
                return status
    return status


def stamp_sets(backend: StorageBackend, stamp: str, deadline_for: DeadlineFor) -> list[SetStatus]:
    """Every planned set of ``stamp`` with its state, oldest first (one listing of ``<stamp>/``)."""
    out = [s for s in (status_of(backend, f, deadline_for) for f in scan_sets(backend, stamp).values()) if s]
    return sorted(out, key=lambda s: (s.requested_at or datetime.min.replace(tzinfo=timezone.utc), s.set_id))


def waiting(store: ArtifactStore, status: SetStatus, plan: Plan | None = None) -> list[str]:
    """What an open set still waits for (``databases ×1``, ``appservice_metering skipped (...)``)."""
    plan = plan or read_plan(store.backend, status.stamp, status.set_id)
    backup_set: BackupSet = read_set(store, status.stamp, status.set_id)
    return waiting_for(plan, backup_set, read_skips(store.backend, status.stamp, status.set_id))


def write_terminal(backend: StorageBackend, stamp: str, set_id: str, state: str, body: Mapping) -> dict | None:
    """Record once that the set ``failed`` or ``expired``. Returns the body this call wrote when it was the one
    that recorded it (then the caller notifies), else None (another replica, or an earlier run, was first).
    Two writers racing past the existence check both write; the body read back names the one kept."""
    key = set_prefix(stamp, set_id) + TERMINAL_FILES[state]
    data = {"format": 1, "stamp": stamp, "backup_set_id": set_id, "state": state, **body}
    if not put_once(backend, key, json.dumps(data, indent=2, sort_keys=True, default=str).encode()):
        return None
    kept = read_object(backend, key)
    return data if kept is not None and kept.get("writer") == data.get("writer") else None


def newest_complete(sets: Iterable[SetStatus], now: datetime | None = None) -> SetStatus | None:
    """The newest complete set by its time (sets dated in the future never count)."""
    done = [s for s in sets if s.state == COMPLETE_STATE and s.requested_at and not is_future(s.requested_at, now)]
    return max(done, key=lambda s: (s.requested_at, s.set_id), default=None)
