"""The schedule loop: waits for the next slot of each schedule, claims it in the store, publishes backup-due.

On start it reads the newest published slot of each schedule from the store and, if a slot came and went while
no scheduler ran, publishes the newest such slot once (reason ``catch-up``), never every missed one; a slot
claimed by a scheduler that died before publishing it counts as missed once its claim is 10 minutes old. Each slot
is claimed first (:mod:`workers.scheduler.slots`), so two schedulers publish it once, under a backup-set id
derived from the slot. Takes the sections it needs, never the root Settings."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Protocol, Sequence

from contracts import BackupDue, BackupDuePayload, new_backup_set_id
from workers.runtime.connect import blocking_channel
from workers.runtime.errors import DrError, TransientError
from workers.runtime.publisher import Publisher
from workers.runtime.settings import BrokerSettings
from workers.scheduler.metrics import ScheduleMetrics
from workers.scheduler.slots import SlotBook, slot_set_id
from workers.scheduler.triggers import Schedule, describe
from workers.storage.base import StorageBackend

log = logging.getLogger("appsvc_dr.scheduler")
RETRY_SECONDS = 30.0
MAX_SLEEP = 60.0      # wake at least once a minute, so a wall-clock jump is noticed
ABANDONED_AFTER = timedelta(minutes=10)   # a claim this old without its published marker lost its scheduler


class Clock(Protocol):
    def now(self) -> datetime: ...

    def sleep(self, stop: threading.Event, seconds: float) -> bool:
        """Wait up to ``seconds`` (or until ``stop``); True when stopped."""


class WallClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def sleep(self, stop: threading.Event, seconds: float) -> bool:
        return stop.wait(max(0.0, min(seconds, MAX_SLEEP)))


def scheduled_event(stamp: str, components: tuple[str, ...], set_id: str | None = None,
                    reason: str = "schedule") -> BackupDue:
    set_id = set_id or new_backup_set_id()
    return BackupDue(source="scheduler", stamp=stamp, correlation_id=set_id,
                     payload=BackupDuePayload(backup_set_id=set_id, components=components,  # type: ignore[arg-type]
                                              reason=reason, requested_by="scheduler"))  # type: ignore[arg-type]


@dataclass
class Scheduler:
    stamp: str
    schedules: Sequence[Schedule]
    broker: BrokerSettings
    store: StorageBackend
    metrics: ScheduleMetrics | None = None
    clock: Clock = field(default_factory=WallClock)
    catch_up: bool = True
    keep_claims: int = 50
    connected: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.book = SlotBook(self.store, self.stamp)
        self.metrics = self.metrics or ScheduleMetrics(self.stamp)
        if not self.book.exclusive:
            log.warning("the store %s cannot create a claim exclusively: run ONE scheduler per stamp (two may "
                        "both publish a slot in a close race; they name the same backup set)", self.store.name)

    def run(self, stop: threading.Event, *, once: bool = False) -> int:
        """Publish at every slot until ``stop`` (or after the first regular slot with ``once``); returns how
        many slots this scheduler published."""
        with blocking_channel(self.broker):  # wrong broker settings fail now, not at the first slot
            pass
        self.connected.set()
        published = 0
        lasts = {s.name: self.book.last_published(s.name) for s in self.schedules}
        for s in self.schedules:
            self.metrics.start(s.name, lasts[s.name])
            log.info("schedule %s for %s; last published slot %s", describe(s), self.stamp,
                     lasts[s.name].isoformat() if lasts[s.name] else "none")
        with Publisher(self.broker) as publisher:
            if self.catch_up:
                published += sum(self._catch_up(publisher, s, lasts[s.name], stop) for s in self.schedules)
            now = self.clock.now()
            pending = {s.name: s.next_after(now) for s in self.schedules}
            by_name = {s.name: s for s in self.schedules}
            while not stop.is_set():
                for name, slot in pending.items():
                    self.metrics.next(name, slot)
                due = min(pending.values())
                log.info("next backup-due for %s at %s", self.stamp, due.isoformat())
                if self._wait_until(due, stop):
                    break
                now = self.clock.now()
                for name, slot in sorted(pending.items(), key=lambda item: item[1]):
                    if slot <= now and not stop.is_set():
                        published += self._fire(publisher, by_name[name], slot, "schedule", stop)
                        pending[name] = by_name[name].next_after(max(slot, self.clock.now()))
                if once:
                    break
        return published

    def _wait_until(self, due: datetime, stop: threading.Event) -> bool:
        while (left := (due - self.clock.now()).total_seconds()) > 0:
            if self.clock.sleep(stop, left):
                return True
        return stop.is_set()

    def _catch_up(self, publisher: Publisher, schedule: Schedule, last: datetime | None,
                  stop: threading.Event) -> int:
        missed = schedule.latest_at_or_before(self.clock.now())
        if last is None:
            log.info("schedule %s has no published slot in the store yet: nothing to catch up", schedule.name)
            return 0
        if missed <= last:
            return 0
        log.warning("schedule %s missed slot %s while no scheduler ran (last published %s): publishing it once "
                    "now (reason catch-up)", schedule.name, missed.isoformat(), last.isoformat())
        return self._fire(publisher, schedule, missed, "catch-up", stop)

    def _fire(self, publisher: Publisher, schedule: Schedule, slot: datetime, reason: str,
              stop: threading.Event) -> int:
        set_id = slot_set_id(self.stamp, schedule.name, slot)
        claim = self._retrying(lambda: self.book.claim(schedule.name, slot, set_id, reason), stop,
                               f"claim slot {slot.isoformat()} of schedule {schedule.name} in the store")
        if claim is None:
            self.metrics.outcome(schedule.name, "failed")
            return 0
        if not claim.won and reason == "catch-up" and self.book.abandoned(schedule.name, slot, ABANDONED_AFTER):
            log.warning("slot %s of schedule %s was claimed (by %s) but never published: publishing it now, as the "
                        "same backup set %s", slot.isoformat(), schedule.name, claim.holder or "?", set_id)
        elif not claim.won:
            log.info("slot %s of schedule %s is already claimed (by %s): another scheduler published it; "
                     "skipping", slot.isoformat(), schedule.name, claim.holder or "an unreadable claim")
            self.metrics.outcome(schedule.name, "already_claimed", slot)
            return 0
        event = scheduled_event(self.stamp, schedule.components, set_id, reason)
        if self._retrying(lambda: publisher.publish(event) or True, stop, "publish the scheduled backup-due") is None:
            self.metrics.outcome(schedule.name, "failed")
            return 0
        self.metrics.outcome(schedule.name, "published", slot)
        self._retrying(lambda: self.book.mark_published(schedule.name, slot, set_id, str(event.event_id)) or True, stop,
                       f"mark slot {slot.isoformat()} of schedule {schedule.name} published in the store")
        log.info("published backup-due %s (set %s, slot %s, schedule %s, reason %s)", event.event_id, set_id,
                 slot.isoformat(), schedule.name, reason)
        try:
            self.book.prune(schedule.name, self.keep_claims)
        except DrError as exc:
            log.warning("could not delete old schedule claims: %s", exc.message)
        return 1

    def _retrying(self, action, stop: threading.Event, what: str):
        """``action()``; a transient failure is logged and retried every 30 s until it works or ``stop``."""
        while True:
            try:
                return action()
            except TransientError as exc:
                log.error("could not %s (%s); retrying in %d s — how to fix: %s", what, exc.message,
                          RETRY_SECONDS, exc.hint)
            if stop.wait(RETRY_SECONDS):
                return None


def run_schedule(schedules: Sequence[Schedule], *, stamp: str, broker: BrokerSettings, store: StorageBackend,
                 stop: threading.Event, once: bool = False, **options) -> int:
    """:class:`Scheduler` ``run`` in one call (options: metrics, clock, catch_up, keep_claims)."""
    return Scheduler(stamp, schedules, broker, store, **options).run(stop, once=once)
