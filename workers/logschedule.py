"""The log-backup schedule (optional, SQL Server): every INTERVAL, one ``database-log-backup-requested`` per
configured database into the newest complete backup set that holds databases.

``appsvc-dr schedule --log-every 15m`` runs it (its own process next to the full-backup schedule). Each log
backup joins the chain of the set's full backup (see ``workers/artifacts/logchain.py``), so the RPO of the
databases becomes the interval. A slot with no complete set yet is skipped with a warning (the log is not
backed up into a set that could not restore); a later full backup moves the chain to its new set, whose
first log backup includes the full's LSN (log backups are never COPY_ONLY, so they continue one chain).
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import Callable

from contracts import DatabaseLogBackupRequested, DatabaseLogBackupRequestedPayload
from workers.artifacts.retention import set_states
from workers.config import Settings
from workers.runtime.connect import blocking_channel
from workers.runtime.errors import TransientError
from workers.runtime.publisher import Publisher
from workers.scheduler.triggers import next_run
from workers.storage.base import StorageBackend
from workers.storage.factory import build_store
from workers.storage.signing import attach, trust_from_settings

log = logging.getLogger("appsvc_dr.logschedule")


def newest_database_set(backend: StorageBackend, stamp: str) -> str | None:
    """The newest complete set of ``stamp`` whose plan has databases (never one dated in the future)."""
    ok = [s for s in set_states(backend, stamp)
          if s.complete and not s.future and s.planned is not None and "databases" in s.planned]
    return max(ok, key=lambda s: s.order).set_id if ok else None


def log_events(stamp: str, set_id: str, databases: list[str]) -> list[DatabaseLogBackupRequested]:
    return [DatabaseLogBackupRequested(source="scheduler", stamp=stamp, correlation_id=set_id,
                                       payload=DatabaseLogBackupRequestedPayload(database=db)) for db in databases]


def _publish_all(publisher: Publisher, events: list[DatabaseLogBackupRequested], stop: threading.Event) -> int:
    sent = 0
    for event in events:
        while not stop.is_set():
            try:
                publisher.publish(event)
                sent += 1
                break
            except TransientError as exc:
                log.error("could not publish %s (%s); retrying in 30 s — how to fix: %s", event.type, exc.message,
                          exc.hint)
                stop.wait(30)
    return sent


def run_log_schedule(settings: Settings, every: timedelta, stop: threading.Event, *, once: bool = False,
                     clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                     backend: StorageBackend | None = None) -> int:
    """Publish at every slot until ``stop`` (or after the first slot with ``once``); returns how many events."""
    published = 0
    store = backend or attach(build_store(settings.store), trust_from_settings(settings.encryption))
    with blocking_channel(settings.broker):  # wrong broker settings fail now, not at the first slot
        pass
    try:
        with Publisher(settings.broker) as publisher:
            while not stop.is_set():
                due = next_run(clock(), every)
                if stop.wait(max(0.0, (due - clock()).total_seconds())):
                    break
                set_id = newest_database_set(store, settings.stamp)
                if set_id is None:
                    log.warning("no complete backup set with databases for %s yet: log backups skipped at %s (they "
                                "start once a full backup set completes)", settings.stamp, due.isoformat())
                else:
                    published += _publish_all(publisher, log_events(settings.stamp, set_id,
                                                                     settings.database.databases), stop)
                    log.info("published database-log-backup-requested for %s into set %s",
                             ", ".join(settings.database.databases), set_id)
                if once:
                    break
    finally:
        if backend is None:
            store.close()
    return published
