"""`schedule`: publish backup-due on a fixed schedule (run it once per site, e.g. as its own container); with
``--log-every``, SQL Server log backups instead (a second process)."""
from __future__ import annotations

import argparse
import signal
import threading
from datetime import time

from workers.cli.publish_cmd import check_components
from workers.config import Settings
from workers.runtime.errors import ConfigurationError
from workers.runtime.parsing import comma_list, parse_duration


def register(sub) -> None:
    p = sub.add_parser("schedule", help="publish backup-due (reason schedule) every INTERVAL, aligned to --at")
    p.add_argument("--every", default="24h", help="interval, e.g. 24h, 6h, 30m (default 24h)")
    p.add_argument("--at", type=time.fromisoformat, help="UTC time the slots are aligned to, e.g. 02:00")
    p.add_argument("--components", help="comma-separated (default: APPSVC_DR_COMPONENTS, i.e. everything this "
                   "site backs up)")
    p.add_argument("--once", action="store_true", help="publish at the next slot, then exit")
    p.add_argument("--log-every", help="instead: SQL Server log backups every INTERVAL (e.g. 15m), one "
                   "database-log-backup-requested per configured database into the newest complete set")
    p.set_defaults(func=schedule)


def schedule(args: argparse.Namespace, settings: Settings) -> int:
    from workers.scheduler import run_schedule

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.log_every:
        from workers.logschedule import run_log_schedule
        run_log_schedule(settings, _interval(args.log_every), stop, once=args.once)
        return 0
    components = tuple(comma_list(args.components)) if args.components \
        else settings.components
    check_components(list(components), settings)
    run_schedule(settings, _interval(args.every), args.at, components, stop, once=args.once)
    return 0


def _interval(text: str):
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ConfigurationError(str(exc), hint="e.g. --every 24h --at 02:00, --log-every 15m") from None
