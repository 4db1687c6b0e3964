"""`config check`: validate a configuration, print it with secrets masked, and say what is wrong."""
from __future__ import annotations

import argparse
import json

from workers.config import Settings
from workers.engines.factory import build_engine
from workers.engines.odbc import ConnectFn
from workers.engines.settings import DatabaseSettings
from workers.engines.sqlserver_perms import render
from workers.runtime.connect import blocking_channel
from workers.runtime.errors import DrError


def register(sub) -> None:
    p = sub.add_parser("config", help="configuration tools")
    p.add_argument("action", choices=["check"])
    p.add_argument("--connect", action="store_true", help="also try to connect to RabbitMQ and, for SQL Server, "
                   "list per database the permissions the login has and lacks (with the GRANT statements)")
    p.set_defaults(func=check)
    p = sub.add_parser("contracts", help="event contract tools")
    p.add_argument("action", choices=["export", "check"], help="export: rewrite contracts/schemas; "
                   "check: fail if they are stale")
    p.set_defaults(func=contracts)


def check(args: argparse.Namespace, settings: Settings) -> int:
    # Settings loaded without error already (load_settings raises ConfigurationError with every problem).
    print(json.dumps(json.loads(settings.model_dump_json()), indent=2))
    if args.connect:
        failed = False
        try:
            with blocking_channel(settings.broker):
                pass
            print(f"RabbitMQ: ok ({settings.broker.host}:{settings.broker.port}{settings.broker.vhost})")
        except DrError as exc:
            print(f"RabbitMQ: FAILED — {exc.message}\nhow to fix: {exc.hint}")
            failed = True
        if settings.database.engine == "sqlserver" and sqlserver_permissions(settings.database):
            failed = True
        if failed:
            return 1
    print("configuration ok")
    return 0


def sqlserver_permissions(database: DatabaseSettings, connect: ConnectFn | None = None) -> int:
    """Print what the login may do per configured database; 1 when it cannot connect, a database is missing
    or a backup would be refused (the other tasks degrade or are optional, so they are only listed)."""
    try:
        engine = build_engine(database, connect=connect)
        permissions, missing = engine.permissions()  # type: ignore[attr-defined]
    except DrError as exc:
        print(f"SQL Server: FAILED — {exc.message}\nhow to fix: {exc.hint}")
        return 1
    print(f"SQL Server {engine.server}: permissions of the login per database")
    for line in render(permissions, missing):
        print(line)
    refused = sorted({p.database for p in permissions if p.task == "backup" and not p.granted} | missing)
    lacking = sum(not p.granted for p in permissions)
    if refused:
        print(f"SQL Server: FAILED — cannot back up {', '.join(refused)}")
        return 1
    print("SQL Server: ok" + (f" ({lacking} permission(s) lacking: run the fix statements above as sysadmin for "
                              "verification, restores and drills)" if lacking else ""))
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
