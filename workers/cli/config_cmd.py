"""`config check`: validate a configuration, print it with secrets masked, and say what is wrong."""
from __future__ import annotations

import argparse
import json

from workers.config import Settings
from workers.runtime.connect import blocking_channel
from workers.runtime.errors import DrError


def register(sub) -> None:
    p = sub.add_parser("config", help="configuration tools")
    p.add_argument("action", choices=["check"])
    p.add_argument("--connect", action="store_true", help="also try to connect to RabbitMQ")
    p.set_defaults(func=check)
    p = sub.add_parser("contracts", help="event contract tools")
    p.add_argument("action", choices=["export", "check"], help="export: rewrite contracts/schemas; "
                   "check: fail if they are stale")
    p.set_defaults(func=contracts)


def check(args: argparse.Namespace, settings: Settings) -> int:
    # Settings loaded without error already (load_settings raises ConfigurationError with every problem).
    print(json.dumps(json.loads(settings.model_dump_json()), indent=2))
    if args.connect:
        try:
            with blocking_channel(settings.broker):
                pass
        except DrError as exc:
            print(f"RabbitMQ: FAILED — {exc.message}\nhow to fix: {exc.hint}")
            return 1
        print(f"RabbitMQ: ok ({settings.broker.host}:{settings.broker.port}{settings.broker.vhost})")
    print("configuration ok")
    return 0


def contracts(args: argparse.Namespace, settings: Settings) -> int:
    from contracts import default_registry
    from contracts.schemas import export, stale

    models = default_registry().models()
    if args.action == "export":
        for path in export(models):
            print(path)
        return 0
    bad = stale(models)
    for name in bad:
        print(f"stale: {name} (run `appsvc-dr contracts export`)")
    return 1 if bad else 0
