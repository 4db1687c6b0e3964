"""`demo`: run the main job once on the embedded default and show what the workers did."""
from __future__ import annotations

import argparse
from pathlib import Path

from workers.config import Settings


def register(sub) -> None:
    p = sub.add_parser("demo", help="run every worker on the local RabbitMQ with a local-directory store, "
                       "rotate made-up secrets, and print every event until the backup set is complete (with Azurite "
                       "installed, the Function Apps storage component too)")
    p.add_argument("--dir", type=Path, default=Path("demo-store"), help="where the demo keeps its store and keys")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--azurite", metavar="COMMAND", help="Azurite to start for the Function Apps storage component "
                   "(default: .tools/azurite, else azurite on PATH; without it the component is skipped)")
    p.set_defaults(func=demo)


def demo(args: argparse.Namespace, settings: Settings) -> int:
    from workers.demo import run_demo
    return run_demo(settings, args.dir.resolve(), args.timeout, azurite_command=args.azurite)
