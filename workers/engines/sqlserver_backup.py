"""What the SQL Server engine checks before a backup and reports after it: the database looked up in
``sys.databases`` (and ONLINE) before a statement names it, the backup files a verify, file list or restore is
given, and the :class:`~workers.engines.base.BackupResult` of a finished backup."""
from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Sequence

from workers.engines import sqlserver_sql as tsql
from workers.engines.base import ONLINE, BackupResult, locally_readable, require_name, sha256_of
from workers.engines.sqlserver_session import Session
from workers.runtime.errors import PermanentError, TransientError

_LOGIN_HINT = ("Check APPSVC_DR_DATABASE__DATABASES: names are matched exactly against sys.databases on "
               "APPSVC_DR_DATABASE__SERVER (and the login must be allowed to see the database).")


def online(session: Session, database: str, server: str) -> tuple[str, bool]:
    """(name as sys.databases spells it, in an availability group?) or raise."""
    require_name("database", database, max_length=tsql.SYSNAME_LENGTH)
    row = session.first(tsql.DATABASE_STATE, database, action=f"look up database {database!r}")
    if row is None:
        raise PermanentError(f"database {database!r} does not exist on {server}", hint=_LOGIN_HINT)
    name, state = str(row["name"]), str(row["state_desc"])
    if state == "RECOVERING":
        raise TransientError(f"database {name!r} on {server} is RECOVERING",
                             hint="SQL Server is still recovering the database; the job is retried.")
    if state != ONLINE:
        raise PermanentError(f"database {name!r} on {server} is {state}, not ONLINE",
                             hint="Bring the database ONLINE (ALTER DATABASE ... SET ONLINE, or repair it) "
                                  "or remove it from APPSVC_DR_DATABASE__DATABASES.")
    return name, bool(row["in_ag"])


def devices_of(source: str | Sequence[str]) -> list[str]:
    """One path, or every stripe's path in order (as named by the stored set)."""
    devices = [source] if isinstance(source, str) else list(source)
    if not devices:
        raise PermanentError("no backup file given", hint="Pass the staged backup's path (every stripe of it).")
    return devices


def backup_result(engine: str, server: str, name: str, staging_path: str, devices: list[str],
                  history: dict[str, Any], started: float, began: datetime, ended: datetime,
                  copy_only: bool) -> BackupResult:
    """The backup's facts: size and SHA-256 (whole and per stripe) when this process can read the files,
    else msdb's size; LSNs and the server version from msdb; start and finish (UTC)."""
    if locally_readable(devices):
        each = [sha256_of([d]) for d in devices]
        size, checksum, parts = sum(n for _, n in each), each[0][0] if len(each) == 1 else None, \
            tuple(c for c, _ in each)
    else:
        size = int(history.get("compressed_backup_size") or history.get("backup_size") or 0)
        checksum, parts = None, ()
    lsn = {k: (str(history[k]) if history.get(k) is not None else None)
           for k in ("first_lsn", "last_lsn", "database_backup_lsn")}
    return BackupResult(name, staging_path, size, time.monotonic() - started, engine, server,
                        checksum=checksum, parts=tuple(devices), part_checksums=parts,
                        server_version=tsql.version_of(history), started_at=began.isoformat(),
                        finished_at=ended.isoformat(), copy_only=copy_only, **lsn)
