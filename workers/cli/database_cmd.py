"""`restore database`: fetch a database backup (decrypt, verify), place it where the server can read it,
restore it WITH REPLACE (MOVE when asked), and check the database is ONLINE."""
from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from workers.artifacts.catalog import artifact_key
from workers.cli.keyopts import add_key_options, keyring_from_args
from workers.cli.progress import ProgressBar
from workers.artifacts.service import ArtifactStore
from workers.databases.base import DatabaseEngine, RestoreResult
from workers.databases.factory import build_engine
from workers.dbbackup.handler import artifact_name
from workers.runtime.config import Settings
from workers.storage.staged import is_unc, join, locate
from workers.upload.handler import artifact_store


def register_restore(restore_sub) -> None:
    p = restore_sub.add_parser("database", help="restore a database from a backup set (WITH REPLACE)")
    p.add_argument("--stamp", help="stamp (default: APPSVC_DR_STAMP)")
    p.add_argument("--set", required=True, dest="set_id", help="backup set id (see `appsvc-dr artifacts list`)")
    p.add_argument("--database", required=True, help="database in the backup set, e.g. appservice_hosting")
    p.add_argument("--target-database", help="restore under another name (default: the same)")
    p.add_argument("--target-server", help="restore to another server (default: APPSVC_DR_DATABASE__SERVER)")
    p.add_argument("--data-path", help="SQL Server: MOVE data files to this directory")
    p.add_argument("--log-path", help="SQL Server: MOVE log files to this directory")
    add_key_options(p)
    p.set_defaults(func=restore_database)


@contextlib.contextmanager
def _staged_copy(settings: Settings, engine_name: str, name: str, fill):
    """Write the backup where the database server can read it; remove it afterwards."""
    directory = settings.staging.database_dir
    unc = is_unc(directory)
    if engine_name == "postgres" and unc:  # pg_restore reads a local file
        directory, unc = tempfile.gettempdir(), False
    if not unc:
        os.makedirs(directory, exist_ok=True)
    path = join(directory, name)
    backend, key = locate(path, settings.staging)
    try:
        fill(backend, key)
        yield path
    finally:
        with contextlib.suppress(Exception):
            backend.delete(key)


@contextlib.contextmanager
def staged_artifact(settings: Settings, engine: DatabaseEngine, store: ArtifactStore, keys, *, stamp: str,
                    set_id: str, database: str, label: str, say=print) -> Iterator[str]:
    """``database``'s artifact of a backup set, fetched, decrypted and verified into a staged file the database
    server can read (its path is yielded); removed afterwards."""
    key = artifact_key(stamp, set_id, "databases", artifact_name(engine.name, database))
    record = store.record(key)
    bar = ProgressBar(f"fetch {Path(key).name}", record.stored_size if record else 0)

    def fill(backend, staged_key: str) -> None:
        with store.open_plain(key, keys=keys, progress=bar) as plain:
            backend.put(staged_key, plain)
        bar.close()

    with _staged_copy(settings, engine.name, f"{label}-{stamp}-{set_id}-{Path(key).name}", fill) as path:
        say(f"fetched and verified {key} → {path}")
        yield path


def restore_from_set(settings: Settings, engine: DatabaseEngine, store: ArtifactStore, keys, *, stamp: str,
                     set_id: str, database: str, target: str, data_path: str | None = None,
                     log_path: str | None = None, progress=None, say=print) -> RestoreResult:
    """Restore ``database`` of a backup set as ``target`` (WITH REPLACE; MOVE to ``data_path`` / ``log_path``,
    default the configured restore paths) and check it."""
    label = "restore" if target == database else f"restore-{target}"
    with staged_artifact(settings, engine, store, keys, stamp=stamp, set_id=set_id, database=database,
                         label=label, say=say) as path:
        return engine.restore(target, path, data_path=data_path or settings.database.restore_data_path,
                              log_path=log_path or settings.database.restore_log_path, progress=progress)


def restore_database(args: argparse.Namespace, settings: Settings) -> int:
    stamp = args.stamp or settings.stamp
    if args.target_server:
        settings = settings.model_copy(update={"database": settings.database.model_copy(
            update={"server": args.target_server})})
    engine = build_engine(settings.database)
    target = args.target_database or args.database
    result = restore_from_set(settings, engine, artifact_store(settings), keyring_from_args(args), stamp=stamp,
                              set_id=args.set_id, database=args.database, target=target, data_path=args.data_path,
                              log_path=args.log_path, progress=lambda pct: print(f"  restore {pct}%", flush=True))
    extra = f", {result.tables} tables, {result.rows} rows" if result.tables is not None else ""
    print(f"restored {target} on {result.server} in {result.duration:.1f}s: {result.state}{extra}")
    return 0
