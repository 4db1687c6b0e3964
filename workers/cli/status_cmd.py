"""`status`: the one screen an operator reads first. Exit code 0 all well, 1 something needs attention (RPO
breached, a set failed, expired or past its deadline, a failed drill, dead letters, broker unreachable), 2 the
status could not be read (store or configuration error) — for monitoring scripts."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import datetime, timedelta

from workers.cli.status_data import PROBLEMS_SHOWN, StampStatus, Status, age, gather
from workers.cli.stores import artifact_store
from workers.config import Settings

OK, ATTENTION = 0, 1


def register(sub) -> None:
    p = sub.add_parser("status", help="per stamp: RPO, sets in progress and their deadlines, failed/expired sets, "
                       "last drill, dead letters, store usage, each store's capacity (the primary and the mirror "
                       "targets); exit 1 when something needs attention")
    p.add_argument("--stamp", action="append", help="stamp (repeatable; default: APPSVC_DR_STAMP and every stamp "
                   "the catalog planned a set for)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=status_cmd)


def status_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from workers.catalog.lifecycle import stored_stamps
    store = artifact_store(settings)
    stamps = args.stamp or sorted({settings.stamp} | stored_stamps(store.backend))
    status = gather(settings, store, stamps)
    print(json.dumps(to_json(status), indent=2) if args.json else "\n".join(lines(status)))
    return ATTENTION if status.attention else OK


def _when(t: datetime | None) -> str:
    return f"{t:%Y-%m-%d %H:%M} UTC" if t else "never"


def _newest(st: StampStatus) -> str:
    return f"{st.newest.set_id}, requested {_when(st.newest.requested_at)}" if st.newest else "none"


def _stamp_lines(st: StampStatus, now: datetime) -> list[str]:
    rpo = st.rpo(now)
    flag = "" if rpo is not None and rpo <= st.objective else "  << ATTENTION"
    out = [f"stamp {st.stamp}",
           f"  RPO            {age(rpo) if rpo is not None else 'none: no complete set'} (objective "
           f"{age(st.objective)}){flag}",
           f"  newest set     {_newest(st)}",
           "  sets           " + ", ".join(f"{n} {state}" for state, n in st.counts.items())]
    for s in st.open_sets:
        late = "  << PAST DEADLINE" if s.overdue(now) else ""
        out.append(f"  {s.state:14} {s.set_id}: waiting for {'; '.join(s.waiting) or 'its marker'}; deadline "
                   f"{_when(s.deadline)}{late}")
    for s in st.problems[:PROBLEMS_SHOWN]:
        out.append(f"  {s.state.upper():14} {s.set_id} at {_when(s.ended_at)}: {s.detail.get('reason', '?')}")
        out.append(f"  {'':14} how to fix: {s.detail.get('hint', '?')}")
    if st.drill:
        rto = f", estimated RTO {age_s(st.drill.seconds)}" if st.drill.seconds is not None else ""
        out.append(f"  last drill     {st.drill.result} at {st.drill.finished_at[:19]} of {st.drill.set_id}{rto}")
        out += [f"  {'':14} {f}" for f in st.drill.failed]
    else:
        out.append(f"  last drill     never (`appsvc-dr drill --stamp {st.stamp}`); RTO unknown")
    out.append(f"  secrets        newest version rotated {_when(st.secrets_rotated_at)}")
    more = "at least " if st.usage_truncated else ""
    out.append(f"  store usage    {more}{st.usage_bytes / 1024 ** 2:.1f} MiB in {st.usage_objects} object(s)")
    out += [f"  {'capacity' if n == 0 else '':14} {c.line()}" for n, c in enumerate(st.capacity)]
    return out


def age_s(seconds: float) -> str:
    return age(timedelta(seconds=seconds))


def lines(status: Status) -> list[str]:
    out = [f"appsvc-dr status at {_when(status.now)}", ""]
    for st in status.stamps:
        out += _stamp_lines(st, status.now) + [""]
    if status.dead_letters is None:
        out.append(f"dead letters   unknown ({status.broker_error})")
    else:
        missing = " (-: no dead-letter queue declared on the broker)" if None in status.dead_letters.values() else ""
        out.append("dead letters   " + ", ".join(f"{w} {'-' if n is None else n}"
                                                for w, n in sorted(status.dead_letters.items())) + missing)
    attention = status.attention
    out += ["", "ATTENTION:" if attention else "all well"] + [f"  - {a}" for a in attention]
    return out


def to_json(status: Status) -> dict:
    def stamp(st: StampStatus) -> dict:
        rpo = st.rpo(status.now)
        return {"stamp": st.stamp, "rpo_seconds": rpo.total_seconds() if rpo is not None else None,
                "rpo_objective_seconds": st.objective.total_seconds(),
                "newest_complete": st.newest.to_json() if st.newest else None, "counts": st.counts,
                "open": [s.to_json() | {"overdue": s.overdue(status.now)} for s in st.open_sets],
                "problems": [s.to_json() for s in st.problems],
                "last_drill": asdict(st.drill) if st.drill else None,
                "secrets_rotated_at": st.secrets_rotated_at.isoformat() if st.secrets_rotated_at else None,
                "store_usage": {"bytes": st.usage_bytes, "objects": st.usage_objects,
                                "truncated": st.usage_truncated},
                "capacity": [c.to_json() for c in st.capacity],
                "attention": st.attention}
    return {"at": status.now.isoformat(), "stamps": [stamp(s) for s in status.stamps],
            "dead_letters": status.dead_letters, "broker_error": status.broker_error,
            "attention": status.attention, "exit_code": ATTENTION if status.attention else OK}
