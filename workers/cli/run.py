"""`worker`, `run` and `topology declare`."""
from __future__ import annotations

import argparse

from workers.app import BUILTIN, App, site_workers, topology_of
from workers.runtime.config import Settings, comma_list
from workers.runtime.connect import declare_topology
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
    p.set_defaults(func=topology)


def worker(args: argparse.Namespace, settings: Settings) -> int:
    return App(settings, [args.name]).run()


def run_all(args: argparse.Namespace, settings: Settings) -> int:
    names = comma_list(args.workers) if args.workers else site_workers(settings.components)
    return App(settings, [n.strip() for n in names if n.strip()]).run()


def topology(args: argparse.Namespace, settings: Settings) -> int:
    topo = Topology.from_settings(settings.broker, settings.retry)
    bindings = topology_of([], settings.components)
    declare_topology(settings.broker, topo, bindings)
    for name, types in bindings:
        q = topo.queues(name)
        print(f"{q.main:<40} <- {', '.join(types)}  (retry: {', '.join(n for _, n in q.retries)}; dlq: {q.dlq})")
    return 0
