"""What `appsvc-dr status` shows, gathered into named records: per stamp from the store (sets and their states,
RPO, last drill, secrets, usage), per stamp and store the capacity (free space, next set forecast; the primary and
each mirror target) and per worker from RabbitMQ (dead letters)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from workers.app import site_workers
from workers.artifacts.lifecycle import EXPIRED, FAILED, OPEN_STATES, SetStatus, newest_complete, stamp_sets, waiting
from workers.artifacts.service import ArtifactStore
from workers.cli.capacity_data import StoreCapacity, capacities
from workers.config import Settings
from workers.runtime import dlq
from workers.runtime.errors import DrError

USAGE_LIMIT = 200_000          # objects listed at most for the store usage of a stamp (then "at least")
PROBLEMS_SHOWN = 10            # failed/expired sets listed per stamp (newest first)


@dataclass
class Drill:
    set_id: str
    finished_at: str
    result: str
    seconds: float | None          # the whole drill: an estimate of the time to restore (RTO)
    failed: list[str] = field(default_factory=list)


@dataclass
class StampStatus:
    stamp: str
    objective: timedelta
    newest: SetStatus | None = None
    open_sets: list[SetStatus] = field(default_factory=list)
    problems: list[SetStatus] = field(default_factory=list)      # failed / expired, newest first
    counts: dict[str, int] = field(default_factory=dict)
    drill: Drill | None = None
    secrets_rotated_at: datetime | None = None
    usage_bytes: int = 0
    usage_objects: int = 0
    usage_truncated: bool = False
    capacity: list[StoreCapacity] = field(default_factory=list)     # the primary, then each mirror target
    attention: list[str] = field(default_factory=list)

    def rpo(self, now: datetime) -> timedelta | None:
        return now - self.newest.requested_at if self.newest and self.newest.requested_at else None


@dataclass
class Status:
    now: datetime
    stamps: list[StampStatus]
    dead_letters: dict[str, int | None] | None       # None: broker not reachable
    broker_error: str | None = None

    @property
    def attention(self) -> list[str]:
        out = [f"{s.stamp}: {a}" for s in self.stamps for a in s.attention]
        if self.dead_letters is None:
            out.append(f"dead letters unknown: {self.broker_error}")
        out += [f"{n} dead letter(s) in {w}" for w, n in sorted((self.dead_letters or {}).items()) if n]
        return out


def _drill(store: ArtifactStore, stamp: str) -> Drill | None:
    from workers.drill.results import read_markers
    markers = read_markers(store.backend, stamp)
    if not markers:
        return None
    last = markers[-1]
    try:
        seconds = (datetime.fromisoformat(last["finished_at"]) - datetime.fromisoformat(last["started_at"])
                   ).total_seconds()
    except (KeyError, TypeError, ValueError):
        seconds = None
    failed = [f"{c.get('component')}: {c.get('error')}" for c in last.get("components", [])
              if c.get("result") != "passed"]
    return Drill(str(last.get("backup_set_id")), str(last.get("finished_at")), str(last.get("result")), seconds,
                 failed)


def _secrets(store: ArtifactStore, stamp: str) -> datetime | None:
    from workers.secrets.versions import latest
    newest = latest(store, stamp)
    return newest.rotated_at if newest else None


def stamp_status(settings: Settings, store: ArtifactStore, stamp: str, now: datetime) -> StampStatus:
    r = settings.retention
    st = StampStatus(stamp, r.rpo_objective)
    sets = stamp_sets(store.backend, stamp, r.deadline_for)
    st.counts = {state: sum(s.state == state for s in sets) for state in ("planned", "in-progress", "complete",
                                                                         "failed", "expired")}
    st.newest = newest_complete(sets, now)
    newest_time = st.newest.requested_at if st.newest else None
    for s in sets:
        if s.state in OPEN_STATES:
            s.waiting = waiting(store, s)
            st.open_sets.append(s)
            if s.overdue(now):
                st.attention.append(f"set {s.set_id} is past its deadline ({s.deadline:%Y-%m-%d %H:%M} UTC), "
                                    f"waiting for {'; '.join(s.waiting) or 'its marker'}")
    st.problems = sorted((s for s in sets if s.state in (FAILED, EXPIRED)
                          and (newest_time is None or (s.requested_at and s.requested_at > newest_time))),
                         key=lambda s: s.requested_at or now, reverse=True)
    for s in st.problems[:PROBLEMS_SHOWN]:
        st.attention.append(f"set {s.set_id} {s.state}: {s.detail.get('reason', '?')}")
    rpo = st.rpo(now)
    if rpo is None:
        st.attention.append("no complete backup set: nothing to restore from")
    elif rpo > r.rpo_objective:
        st.attention.append(f"RPO breached: the newest complete set is {age(rpo)} old (objective "
                            f"{age(r.rpo_objective)})")
    st.drill = _drill(store, stamp)
    if st.drill and st.drill.result != "passed":
        st.attention.append(f"the last restore drill ({st.drill.finished_at[:19]}) failed")
    try:
        st.secrets_rotated_at = _secrets(store, stamp)
    except DrError:
        st.secrets_rotated_at = None
    for n, info in enumerate(store.backend.list(f"{stamp}/")):
        if n >= USAGE_LIMIT:
            st.usage_truncated = True
            break
        st.usage_bytes += info.size
        st.usage_objects += 1
    return st


def gather(settings: Settings, store: ArtifactStore, stamps: list[str], now: datetime | None = None) -> Status:
    now = now or datetime.now(timezone.utc)
    status = Status(now, [stamp_status(settings, store, s, now) for s in stamps], None)
    for st, entries in zip(status.stamps, capacities(settings, stamps).values()):
        st.capacity = entries
        st.attention += [f"store {c.store} will not fit the next backup set: {c.forecast.describe()}"
                         for c in entries if c.will_not_fit and c.forecast is not None]
    try:
        status.dead_letters = dlq.counts(settings.broker, settings.retry, site_workers(settings.components))
    except DrError as exc:
        status.broker_error = exc.message
    return status


def age(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


