"""`drill`: a restore drill of the newest complete backup set into scratch space; `drill --report`: the results."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from datetime import datetime, time, timezone
from pathlib import Path

from workers.cli.keyopts import add_key_options, keyring_from_args
from workers.cli.stores import artifact_store, chosen_store
from workers.config import Settings
from workers.runtime.errors import ConfigurationError, DrError
from workers.runtime.parsing import comma_list


def register(sub) -> None:
    p = sub.add_parser("drill", help="restore drill: restore a backup set into a scratch database and directory "
                       "(never production), check every component, report and record the result")
    p.add_argument("--stamp", help="stamp (default: APPSVC_DR_STAMP)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--set", dest="set_id", help="backup set id (default: the newest complete set)")
    which.add_argument("--latest", action="store_true", help="the newest complete set (default)")
    which.add_argument("--report", action="store_true", help="show the recorded drill results instead of drilling")
    p.add_argument("--components", help="comma-separated subset of secrets,databases,fileshare,functions "
                   "(default: the set's)")
    p.add_argument("--scratch", type=Path, help="parent of the scratch directory (default: the system temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the scratch database(s) and directory for inspection")
    p.add_argument("--target-server", help="database server for the scratch databases (default: "
                   "APPSVC_DR_DATABASE__SERVER)")
    p.add_argument("--data-path", help="SQL Server: directory for the scratch data files (default: "
                   "APPSVC_DR_DATABASE__RESTORE_DATA_PATH, else the instance's default data directory)")
    p.add_argument("--log-path", help="SQL Server: directory for the scratch log files (default: --data-path, "
                   "else APPSVC_DR_DATABASE__RESTORE_LOG_PATH, else the instance's default log directory)")
    p.add_argument("--verify-only", action="store_true", help="databases: only verify the backups (RESTORE "
                   "VERIFYONLY / pg_restore --list), restore nothing; reported as 'verified', never 'passed'")
    p.add_argument("--textfile", metavar="FILE", help="also write the Prometheus metric to FILE (a .prom file "
                   "in node_exporter's --collector.textfile.directory; a drill of a secondary copy, --store NAME, "
                   "writes the secondary metrics, labelled store=NAME: give it a file of its own)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--every", help="keep running: drill again every INTERVAL (e.g. 7d), at slots aligned to --at "
                   "(UTC); the drill container of deploy/ runs weekly this way")
    p.add_argument("--at", type=time.fromisoformat, help="UTC time the --every slots are aligned to, e.g. 03:00")
    add_key_options(p)
    p.set_defaults(func=drill_cmd)


def drill_cmd(args: argparse.Namespace, settings: Settings) -> int:
    if not args.every:
        return drill_once(args, settings)
    from workers.runtime.parsing import parse_duration
    from workers.scheduler import next_run

    try:
        every = parse_duration(args.every)
    except ValueError as exc:
        raise ConfigurationError(str(exc), hint="e.g. --every 7d --at 03:00") from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while True:
        slot = next_run(datetime.now(timezone.utc), every, args.at)
        print(f"next restore drill at {slot:%Y-%m-%d %H:%M} UTC", flush=True)
        if stop.wait((slot - datetime.now(timezone.utc)).total_seconds()):
            return 0
        try:
            drill_once(args, settings)                 # a failed drill is in its marker and metric: go on
        except DrError as exc:
            print(f"error: {exc.message}\nhow to fix: {exc.hint}", file=sys.stderr, flush=True)


def drill_once(args: argparse.Namespace, settings: Settings) -> int:
    from workers.drill.results import estimated_rto, read_markers, last_by_result, report_lines, table, \
        write_textfile
    from workers.drill.run import run_drill

    stamp, store = args.stamp or settings.stamp, artifact_store(settings)
    if args.report:
        markers = read_markers(store.backend, stamp)
        if args.textfile:
            write_textfile(args.textfile, last_by_result(markers), _estimate(stamp, estimated_rto(markers)),
                           chosen_store())
        print(json.dumps(markers, indent=2) if args.json else "\n".join(report_lines(markers, stamp)))
        return 0 if markers and markers[-1].get("result") in ("passed", "verified") else 1
    if args.target_server:
        settings = settings.model_copy(update={"database": settings.database.model_copy(
            update={"server": args.target_server})})
    components = comma_list(args.components) if args.components else None
    say = (lambda line: None) if args.json else print
    result, marker = run_drill(settings, store, keyring_from_args(args), stamp, set_id=args.set_id,
                               components=components, scratch=args.scratch, keep=args.keep,
                               data_path=args.data_path, log_path=args.log_path, say=say,
                               verify_only=args.verify_only)
    if args.textfile:
        markers = read_markers(store.backend, stamp) + ([] if marker else [result.to_json()])
        write_textfile(args.textfile, last_by_result(markers), _estimate(stamp, estimated_rto(markers)),
                           chosen_store())
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print("\n".join(["", *table(result)]))
        print(f"result recorded in the store: {marker}" if marker else
              "result NOT recorded in the store (see the warning above)")
    return 0 if result.ok else 1


def _estimate(stamp: str, seconds: float | None) -> dict[str, float]:
    return {} if seconds is None else {stamp: seconds}
