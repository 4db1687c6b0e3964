"""`worker`, `run` and `topology declare`."""
from __future__ import annotations

import argparse
import os
import sys

from workers.app import BUILTIN, App, site_workers, topology_of
from workers.config import Settings
from workers.runtime import leftovers
from workers.runtime.connect import declare_topology
from workers.runtime.parsing import comma_list
from workers.runtime.topology import Topology


def register(sub) -> None:
    p = sub.add_parser("worker", help="run one worker (built-in name or module:factory)")
    p.add_argument("name")
    p.set_defaults(func=worker)
    p = sub.add_parser("run", help="run every worker of this machine in one process (small sites, demo)")
    p.add_argument("--workers", help=f"comma-separated subset of {','.join(sorted(BUILTIN))} (default: the "
                   "workers of what this site backs up, APPSVC_DR_COMPONENTS)")
    p.set_defaults(func=run_all)
    p = sub.add_parser("topology", help="declare exchange, queues, retry and dead-letter queues")
    p.add_argument("action", choices=["declare"])
    p.add_argument("--delete-unused", action="store_true",
                   help="delete the queues of built-in workers this site does not run (APPSVC_DR_COMPONENTS): "
                        "their queue and retry queues, and their dead-letter queue when it is empty")
    p.set_defaults(func=topology)


PRIVATE_UMASK = 0o077


def private_umask() -> None:
    """Everything this process (and its children) creates is owner-only: plaintext staging, drop copies and
    restore files land 0600 in 0700 directories even where a library creates them with default modes."""
    os.umask(PRIVATE_UMASK)


def worker(args: argparse.Namespace, settings: Settings) -> int:
    private_umask()
    return App(settings, [args.name]).run()


def run_all(args: argparse.Namespace, settings: Settings) -> int:
    private_umask()
    names = comma_list(args.workers) if args.workers else site_workers(settings.components)
    return App(settings, [n.strip() for n in names if n.strip()]).run()


def topology(args: argparse.Namespace, settings: Settings) -> int:
    topo = Topology.from_settings(settings.broker, settings.retry)
    bindings = topology_of([], settings.components)
    declare_topology(settings.broker, topo, bindings)
    for name, types in bindings:
        q = topo.queues(name)
        print(f"{q.main:<40} <- {', '.join(types)}  (retry: {', '.join(n for _, n in q.retries)}; dlq: {q.dlq})")
    unused = sorted(set(BUILTIN) - {name for name, _ in bindings})
    found = leftovers.find(settings.broker, topo, unused)
    if found and args.delete_unused:
        kept = leftovers.delete(settings.broker, found)
        for left in found:
            print(f"{left.queue:<40} {'kept: ' if left in kept else 'deleted'}"
                  + (f"{left.messages} dead letter(s); look at them with `appsvc-dr dlq list {left.worker}`, "
                     f"then `rabbitmqctl delete_queue {left.queue}`" if left in kept else ""))
        return 0
    for left in found:
        print(f"warning: {left.queue} ({left.messages} message(s)) belongs to the {left.worker} worker, which this "
              f"site does not run (APPSVC_DR_COMPONENTS={','.join(settings.components)})"
              + ("" if left.dead_letters else ": it still receives events nobody will process"), file=sys.stderr)
    if found:
        print("hint: `appsvc-dr topology declare --delete-unused` deletes them (a dead-letter queue only when "
              "empty)", file=sys.stderr)
    return 0
