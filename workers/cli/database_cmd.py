"""`restore database`: fetch a database backup (decrypt, verify), place it where the server can read it,
check it against the target (SQL Server pre-flight), restore it WITH REPLACE (MOVE under a new name or when
asked), and check the database is ONLINE."""
from __future__ import annotations

import argparse

from workers.cli.keyopts import add_key_options, keyring_from_args
from workers.cli.progress import ProgressBar
from workers.cli.run_cmd import private_umask
from workers.cli.stores import artifact_store
from workers.config import Settings
from workers.engines.base import RestoreOptions
from workers.engines.factory import build_engine
from workers.dbbackup.restore import restore_from_set


def register_restore(restore_sub) -> None:
    p = restore_sub.add_parser("database", help="restore a database from a backup set (WITH REPLACE)")
    p.add_argument("--stamp", help="stamp (default: APPSVC_DR_STAMP)")
    p.add_argument("--set", required=True, dest="set_id", help="backup set id (see `appsvc-dr artifacts list`)")
    p.add_argument("--database", required=True, help="database in the backup set, e.g. appservice_hosting")
    p.add_argument("--target-database", help="restore under another name (default: the same)")
    p.add_argument("--target-server", help="restore to another server (default: APPSVC_DR_DATABASE__SERVER)")
    p.add_argument("--data-path", help="SQL Server: MOVE data files to this directory (default: in place the "
                   "backup's paths, under a new name the server's default data directory)")
    p.add_argument("--log-path", help="SQL Server: MOVE log files to this directory (default: --data-path, else "
                   "as for data files)")
    add_override_flags(p)
    p.add_argument("--no-logs", action="store_true", help="SQL Server: restore the full backup only, without the "
                   "set's log backups (default: apply them, in LSN order)")
    add_key_options(p)
    p.set_defaults(func=restore_database)


def add_override_flags(p: argparse.ArgumentParser) -> None:
    """The pre-flight overrides, each relaxing one refusal (`restore database` and `recover plan|run`)."""
    p.add_argument("--force-disconnect", action="store_true", help="SQL Server: end the target's open sessions "
                   "first (ALTER DATABASE ... SET SINGLE_USER WITH ROLLBACK IMMEDIATE; MULTI_USER again if the "
                   "restore fails); without it a target in use is refused")
    p.add_argument("--tail-log-backup", action="store_true", help="SQL Server, in place: back up the tail of "
                   "the target's log (BACKUP LOG ... WITH NORECOVERY) into the staging directory first and keep it")
    p.add_argument("--allow-database-mismatch", action="store_true", help="restore even though the backup holds "
                   "another database than the set names, or the existing target is another database")
    p.add_argument("--allow-no-checksum", action="store_true", help="SQL Server: restore a backup taken "
                   "without page checksums (run DBCC CHECKDB afterwards)")


def restore_options(args: argparse.Namespace, settings: Settings) -> RestoreOptions:
    """A production restore's options: the backup must hold --database; the flags relax one check each."""
    return RestoreOptions(expected_database=args.database, allow_database_mismatch=args.allow_database_mismatch,
                          force_disconnect=args.force_disconnect, allow_no_checksum=args.allow_no_checksum,
                          tail_log_dir=settings.staging.database_dir if args.tail_log_backup else None)


def restore_database(args: argparse.Namespace, settings: Settings) -> int:
    private_umask()                     # the decrypted dump is plaintext on local disk
    stamp = args.stamp or settings.stamp
    if args.target_server:
        settings = settings.model_copy(update={"database": settings.database.model_copy(
            update={"server": args.target_server})})
    engine = build_engine(settings.database)
    target = args.target_database or args.database
    options = restore_options(args, settings)
    result = restore_from_set(settings.staging, settings.database, engine, artifact_store(settings),
                              keyring_from_args(args), stamp=stamp, set_id=args.set_id, database=args.database,
                              target=target, data_path=args.data_path, log_path=args.log_path,
                              progress=lambda pct: print(f"  restore {pct}%", flush=True),
                              fetch_progress=ProgressBar, options=options, logs=not args.no_logs)
    extra = f", {result.tables} tables, {result.rows} rows" if result.tables is not None else ""
    print(f"restored {target} on {result.server} in {result.duration:.1f}s: {result.state}{extra}")
    return 0
