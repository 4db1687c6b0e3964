"""The schedule producer: publishes backup-due (reason schedule) at fixed times, e.g. daily at 02:00 UTC."""
from __future__ import annotations

import logging
import threading
from datetime import datetime, time, timedelta, timezone
from typing import Callable

from contracts import BackupDue, BackupDuePayload, new_backup_set_id
from workers.config import Settings
from workers.runtime.connect import blocking_channel
from workers.runtime.errors import TransientError
from workers.runtime.publisher import Publisher

log = logging.getLogger("appsvc_dr.scheduler")


def next_run(now: datetime, every: timedelta, at: time | None = None) -> datetime:
    """The first slot after ``now``: multiples of ``every`` counted from ``at`` (UTC) on now's day, or from
    midnight when ``at`` is None. Slots are aligned, so a restarted scheduler keeps the same times."""
    if every <= timedelta(0):
        raise ValueError("the interval must be positive")
    anchor = datetime.combine(now.date(), at or time(0), tzinfo=timezone.utc)
    if anchor > now:
        anchor -= ((anchor - now) // every + 1) * every
    return anchor + ((now - anchor) // every + 1) * every


def scheduled_event(stamp: str, components: tuple[str, ...]) -> BackupDue:
    set_id = new_backup_set_id()
    return BackupDue(source="scheduler", stamp=stamp, correlation_id=set_id,
                     payload=BackupDuePayload(backup_set_id=set_id, components=components,  # type: ignore[arg-type]
                                              reason="schedule", requested_by="scheduler"))


def _published(publisher: Publisher, event: BackupDue) -> bool:
    try:
        publisher.publish(event)
        return True
    except TransientError as exc:
        log.error("could not publish the scheduled backup-due (%s); retrying in 30 s — how to fix: %s",
                  exc.message, exc.hint)
        return False


def run_schedule(settings: Settings, every: timedelta, at: time | None, components: tuple[str, ...],
                 stop: threading.Event, *, once: bool = False,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> int:
    """Publish at every slot until ``stop`` is set (or after the first slot with ``once``); returns how many."""
    published = 0
    with blocking_channel(settings.broker):  # wrong broker settings fail now, not at the first slot
        pass
    with Publisher(settings.broker) as publisher:
        while not stop.is_set():
            due = next_run(clock(), every, at)
            log.info("next backup-due for %s at %s", settings.stamp, due.isoformat())
            if stop.wait(max(0.0, (due - clock()).total_seconds())):
                break
            event = scheduled_event(settings.stamp, components)
            while not _published(publisher, event) and not stop.wait(30):
                pass  # a missed slot is never skipped silently: keep trying until the broker takes it
            if stop.is_set():
                break
            published += 1
            log.info("published backup-due %s (set %s)", event.event_id, event.correlation_id)
            if once:
                break
    return published
