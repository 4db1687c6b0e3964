"""`dlq list|show|replay <worker>`: see why something failed and send it back after fixing the cause.

`list` and `show` first say how many letters there are and why (counts by reason), then stream the letters
one at a time up to ``--limit`` and say how many more there are: memory stays at one letter, however many
and however large they are.
"""
from __future__ import annotations

import argparse
import json
import sys

from workers.config import Settings
from workers.runtime import dlq as dlqlib

DEFAULT_LIMIT = 100


def register(sub) -> None:
    p = sub.add_parser("dlq", help="inspect and replay dead letters")
    p.add_argument("action", choices=["list", "show", "replay"])
    p.add_argument("worker", help="worker name, e.g. upload, notifier")
    p.add_argument("--id", help="only the message with this event id")
    p.add_argument("--limit", type=int, help=f"at most this many messages (list/show: default {DEFAULT_LIMIT})")
    p.add_argument("--json", action="store_true", help="machine-readable output (list/show)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "replay":
        moved = dlqlib.replay(settings.broker, settings.retry, args.worker, event_id=args.id, limit=args.limit)
        print(f"replayed {moved} message(s) to {args.worker}")
        return 0
    limit = DEFAULT_LIMIT if args.limit is None else max(args.limit, 0)
    census = dlqlib.census(settings.broker, settings.retry, args.worker)
    letters = dlqlib.scan(settings.broker, settings.retry, args.worker, limit, event_id=args.id)
    out = sys.stdout
    shown = (_json if args.json else _text)(args, census, letters, out)
    if not args.id and census.total > shown and not args.json:
        print(f"... {census.total - shown} more (not shown; --limit {census.total} lists them all)", file=out)
    return 0


def _row(action: str, letter: dlqlib.DeadLetter) -> dict:
    row = letter.summary()
    return dict(row, body=dlqlib.pretty_body(letter.body)) if action == "show" else row


def _json(args, census: dlqlib.Census, letters, out) -> int:
    """One JSON object, its `messages` array written letter by letter."""
    head = {"worker": args.worker, "queue": census.queue, "total": census.total,
            "reasons_counted": census.counted, "by_reason": census.by_reason}
    out.write(json.dumps(head, indent=2)[:-2] + ',\n  "messages": [')
    shown = 0
    for letter in letters:
        out.write(("," if shown else "") + "\n    " + json.dumps(_row(args.action, letter), default=str))
        out.flush()
        shown += 1
    more = 0 if args.id else max(census.total - shown, 0)
    out.write(("\n  " if shown else "") + f'],\n  "shown": {shown},\n  "more": {more}\n}}\n')
    return shown


def _text(args, census: dlqlib.Census, letters, out) -> int:
    if census.total == 0:
        print(f"no dead letters for {args.worker}", file=out)
        return 0
    covered = "" if census.counted == census.total else f" (reasons of the {census.counted} read just after)"
    reasons = ", ".join(f"{reason} {n}" for reason, n in census.by_reason.items())
    print(f"{census.total} dead letter(s) in {census.queue}{covered}: {reasons}", file=out)
    if args.action == "list":
        print(f"{'#':>3}  {'event id':36}  {'type':18} {'reason':18} error", file=out)
    shown = 0
    for d in letters:
        shown += 1
        if args.action == "list":
            print(f"{d.position:>3}  {d.event_id or '-':36}  {d.event_type or '-':18} {d.reason:18} "
                  f"{d.header('x-dr-error')[:80]}", file=out, flush=True)
            continue
        s = d.summary()
        print(f"--- #{d.position} event {s['event_id']} ({s['type']})", file=out)
        for key in ("worker", "reason", "error_class", "error", "attempts", "dead_lettered_at"):
            print(f"{key:>16}: {s[key]}", file=out)
        print(f"{'how to fix':>16}: {s['hint']}", file=out)
        print(dlqlib.pretty_body(d.body), file=out)
        out.flush()
    if args.id and not shown:
        print(f"no dead letter with event id {args.id} for {args.worker}", file=out)
    return shown
