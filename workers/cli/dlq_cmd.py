"""`dlq list|show|replay <worker>`: see why something failed and send it back after fixing the cause."""
from __future__ import annotations

import argparse
import json

from workers.config import Settings
from workers.runtime import dlq as dlqlib


def register(sub) -> None:
    p = sub.add_parser("dlq", help="inspect and replay dead letters")
    p.add_argument("action", choices=["list", "show", "replay"])
    p.add_argument("worker", help="worker name, e.g. upload, notifier")
    p.add_argument("--id", help="only the message with this event id")
    p.add_argument("--limit", type=int, help="at most this many messages")
    p.add_argument("--json", action="store_true", help="machine-readable output (list/show)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "replay":
        moved = dlqlib.replay(settings.broker, settings.retry, args.worker, event_id=args.id, limit=args.limit)
        print(f"replayed {moved} message(s) to {args.worker}")
        return 0
    letters = [d for d in dlqlib.peek(settings.broker, settings.retry, args.worker, args.limit or 100)
               if not args.id or d.event_id == args.id]
    if args.json:
        rows = [dict(d.summary(), body=dlqlib.pretty_body(d.body)) if args.action == "show" else d.summary()
                for d in letters]
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not letters:
        print(f"no dead letters for {args.worker}")
        return 0
    if args.action == "list":
        print(f"{'#':>3}  {'event id':36}  {'type':18} {'reason':18} error")
        for d in letters:
            print(f"{d.position:>3}  {d.event_id or '-':36}  {d.event_type or '-':18} {d.reason:18} "
                  f"{d.header('x-dr-error')[:80]}")
        return 0
    for d in letters:
        s = d.summary()
        print(f"--- #{d.position} event {s['event_id']} ({s['type']})")
        for key in ("worker", "reason", "error_class", "error", "attempts", "dead_lettered_at"):
            print(f"{key:>16}: {s[key]}")
        print(f"{'how to fix':>16}: {s['hint']}")
        print(dlqlib.pretty_body(d.body))
    return 0
