"""`schedule`: publish backup-due at cron or interval slots (run it once per site, e.g. as its own container;
a second one is harmless: each slot is claimed in the store and published once); with ``--log-every``, SQL
Server log backups instead (a second process)."""
from __future__ import annotations

import argparse
import signal
import threading
from datetime import time

from workers.cli.publish_cmd import check_components
from workers.cli.stores import opened
from workers.config import Settings
from workers.runtime.errors import ConfigurationError
from workers.runtime.parsing import comma_list, parse_duration

DEFAULT_EVERY = "24h"


def register(sub) -> None:
    p = sub.add_parser("schedule", help="publish backup-due at cron slots (--cron, or APPSVC_DR_SCHEDULE__CRON) "
                       "or every INTERVAL aligned to --at; missed slots are caught up once after downtime")
    p.add_argument("--cron", action="append", metavar="'CRON[=COMPONENTS]'",
                   help='a 5-field cron expression, optionally "=components", e.g. --cron "0 * * * *=databases" '
                        '--cron "0 2 * * *=fileshare,secrets"; repeatable (replaces APPSVC_DR_SCHEDULE__CRON)')
    p.add_argument("--timezone", help="IANA zone the cron expressions are read in (default "
                   "APPSVC_DR_SCHEDULE__TIMEZONE, i.e. UTC)")
    p.add_argument("--every", help=f"interval instead of cron, e.g. 24h, 6h, 30m (default {DEFAULT_EVERY} when no "
                   "cron is configured)")
    p.add_argument("--at", type=time.fromisoformat, help="UTC time the --every slots are aligned to, e.g. 02:00")
    p.add_argument("--components", help="comma-separated, for --every and for --cron entries without "
                   "'=components' (default: APPSVC_DR_COMPONENTS, i.e. everything this site backs up)")
    p.add_argument("--no-catch-up", action="store_true", help="do not publish a slot missed while no scheduler "
                   "ran (default: APPSVC_DR_SCHEDULE__CATCH_UP)")
    p.add_argument("--once", action="store_true", help="publish at the next slot, then exit")
    p.add_argument("--log-every", help="instead: SQL Server log backups every INTERVAL (e.g. 15m), one "
                   "database-log-backup-requested per configured database into the newest complete set")
    p.set_defaults(func=schedule)


def schedules_from(args: argparse.Namespace, settings: Settings) -> list:
    """The schedules the flags ask for, else the settings' cron entries, else daily at midnight UTC."""
    from workers.scheduler.triggers import IntervalTrigger, Schedule, ordered_components, parse_entries, zone

    components = tuple(comma_list(args.components)) if args.components else settings.components
    check_components(list(components), settings)
    tz = zone(args.timezone or settings.schedule.timezone)
    cron = args.cron if args.cron is not None else (settings.schedule.cron if args.every is None else ())
    schedules = parse_entries(cron, components, tz, settings.components) if cron else []
    if args.every is not None or not cron:
        try:
            trigger = IntervalTrigger(parse_duration(args.every or DEFAULT_EVERY), args.at)
        except ValueError as exc:
            raise ConfigurationError(str(exc), hint="e.g. --every 24h --at 02:00") from None
        key = ordered_components(components, settings.components)
        same = [s for s in schedules if s.components == key]
        schedules = [s for s in schedules if s.components != key] + \
            [Schedule(key, (*(same[0].triggers if same else ()), trigger))]
    return schedules


def schedule(args: argparse.Namespace, settings: Settings) -> int:
    from workers.runtime.http import StatusServer
    from workers.scheduler.metrics import ScheduleMetrics
    from workers.scheduler.run import Scheduler
    from workers.storage.factory import build_store
    from workers.storage.signing import attach, trust_from_settings

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.log_every:
        from workers.logschedule import run_log_schedule
        run_log_schedule(settings, _interval(args.log_every), stop, once=args.once)
        return 0
    schedules = schedules_from(args, settings)
    store = opened(attach(build_store(settings.store), trust_from_settings(settings.encryption)))
    scheduler = Scheduler(settings.stamp, schedules, settings.broker, store, ScheduleMetrics(settings.stamp),
                          catch_up=settings.schedule.catch_up and not args.no_catch_up,
                          keep_claims=settings.schedule.keep_claims)
    status = None
    if settings.metrics.enabled:
        status = StatusServer(scheduler.metrics.registry, lambda: {"scheduler": scheduler.connected.is_set()},
                              settings.metrics.host, settings.metrics.port).start()
    try:
        scheduler.run(stop, once=args.once)
    finally:
        if status is not None:
            status.stop()
    return 0


def _interval(text: str):
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ConfigurationError(str(exc), hint="e.g. --log-every 15m") from None
