"""T-SQL for BACKUP / RESTORE, built only from validated pieces.

BACKUP and RESTORE take no bind parameters for their options, so names are quoted like QUOTENAME
(``[`` + name with ``]`` doubled + ``]``), string literals are ``N'...'`` with ``'`` doubled, numbers are ints,
and database names are additionally checked against ``sys.databases`` by the engine before use.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from workers.engines.base import require_name
from workers.runtime.errors import PermanentError

SYSNAME_LENGTH = 128
MAX_PATH_LENGTH = 1024

DATABASE_STATE = ("SELECT name, state_desc, CASE WHEN replica_id IS NULL THEN 0 ELSE 1 END AS in_ag "
                  "FROM sys.databases WHERE name = ?")
PREFERRED_REPLICA = "SELECT sys.fn_hadr_backup_is_preferred_replica(?) AS preferred"
# RESTORE VERIFYONLY / FILELISTONLY / HEADERONLY need CREATE DATABASE (RESTORE, "Permissions")
MAY_VERIFY = "SELECT HAS_PERMS_BY_NAME(N'master', N'DATABASE', N'CREATE DATABASE') AS may_verify"
BACKUP_HISTORY = ("SELECT TOP (1) bs.first_lsn, bs.last_lsn, bs.database_backup_lsn, bs.backup_size, "
                  "bs.compressed_backup_size, bs.software_major_version, bs.software_minor_version, "
                  "bs.software_build_version FROM msdb.dbo.backupset AS bs "
                  "JOIN msdb.dbo.backupmediafamily AS mf ON mf.media_set_id = bs.media_set_id "
                  "WHERE bs.database_name = ? AND mf.physical_device_name = ? ORDER BY bs.backup_set_id DESC")


def quote_name(name: str, kind: str = "database") -> str:
    """QUOTENAME: ``a]b`` -> ``[a]]b]``. Rejects empty, over-long (sysname) and control-character names."""
    require_name(kind, name, max_length=SYSNAME_LENGTH)
    return "[" + name.replace("]", "]]") + "]"


def literal(value: str, kind: str = "path") -> str:
    """An ``N'...'`` literal with ``'`` doubled. Rejects control characters (no line breaks in a path)."""
    require_name(kind, value, max_length=MAX_PATH_LENGTH)
    return "N'" + value.replace("'", "''") + "'"


def is_url(device: str) -> bool:
    return "://" in device


def devices_clause(devices: Sequence[str]) -> str:
    """``DISK = N'a', DISK = N'b'``. URLs are refused: BACKUP TO URL is not supported (stage on a share)."""
    if not devices:
        raise PermanentError("no backup device given", hint="Pass a staging path.")
    urls = [d for d in devices if is_url(d)]
    if urls:
        raise PermanentError(f"BACKUP/RESTORE to a URL ({urls[0][:80]!r}) is not supported",
                             hint="Set APPSVC_DR_STAGING__DATABASE_DIR to a directory or UNC share SQL Server can "
                                  "write; the upload worker stores the backup in the object store.")
    return ", ".join(f"DISK = {literal(d)}" for d in devices)


def version_of(history: Mapping[str, Any]) -> str | None:
    """``16.0.4135`` from msdb.dbo.backupset's software_{major,minor,build}_version (None when unknown)."""
    parts = [history.get(f"software_{k}_version") for k in ("major", "minor", "build")]
    return ".".join(str(int(p)) for p in parts) if all(p is not None for p in parts) else None


@dataclass(frozen=True)
class BackupOptions:
    compression: bool = True
    copy_only: bool = True
    stats_percent: int = 10
    max_transfer_size: int | None = None
    buffer_count: int | None = None


def backup_database(name: str, devices: Sequence[str], options: BackupOptions) -> str:
    """``BACKUP DATABASE [db] TO DISK = N'...' WITH CHECKSUM, FORMAT, INIT, ...``."""
    opts = ["CHECKSUM", "FORMAT", "INIT"]
    opts.append("COMPRESSION" if options.compression else "NO_COMPRESSION")
    if options.copy_only:
        opts.append("COPY_ONLY")
    opts.append(f"STATS = {int(options.stats_percent)}")
    if options.max_transfer_size is not None:
        opts.append(f"MAXTRANSFERSIZE = {int(options.max_transfer_size)}")
    if options.buffer_count is not None:
        opts.append(f"BUFFERCOUNT = {int(options.buffer_count)}")
    return f"BACKUP DATABASE {quote_name(name)} TO {devices_clause(devices)} WITH {', '.join(opts)}"


def backup_log(name: str, devices: Sequence[str], options: BackupOptions) -> str:
    """``BACKUP LOG [db] TO DISK = N'...' WITH CHECKSUM, FORMAT, INIT, ...``: never COPY_ONLY (it truncates the
    log, which is what it is for), so it joins the database's one log chain."""
    opts = ["CHECKSUM", "FORMAT", "INIT", "COMPRESSION" if options.compression else "NO_COMPRESSION",
            f"STATS = {int(options.stats_percent)}"]
    return f"BACKUP LOG {quote_name(name)} TO {devices_clause(devices)} WITH {', '.join(opts)}"


def restore_log(name: str, devices: Sequence[str], stats_percent: int) -> str:
    return f"RESTORE LOG {quote_name(name)} FROM {devices_clause(devices)} WITH NORECOVERY, STATS = {int(stats_percent)}"


def verify_only(devices: Sequence[str]) -> str:
    return f"RESTORE VERIFYONLY FROM {devices_clause(devices)} WITH CHECKSUM"


def filelist_only(devices: Sequence[str]) -> str:
    return f"RESTORE FILELISTONLY FROM {devices_clause(devices)}"


def restore_database(name: str, devices: Sequence[str], moves: Iterable[tuple[str, str]],
                     stats_percent: int, *, checksum: bool = False, recovery: bool = True) -> str:
    """``RESTORE DATABASE [db] FROM ... WITH REPLACE, RECOVERY, MOVE N'logical' TO N'path', ..., STATS = N``
    (``CHECKSUM``: fail unless every page checksum of the backup is present and right; ``NORECOVERY`` when log
    backups follow)."""
    opts = ["REPLACE", "RECOVERY" if recovery else "NORECOVERY"] + (["CHECKSUM"] if checksum else [])
    opts += [f"MOVE {literal(logical, 'logical file')} TO {literal(path)}" for logical, path in moves]
    opts.append(f"STATS = {int(stats_percent)}")
    return f"RESTORE DATABASE {quote_name(name)} FROM {devices_clause(devices)} WITH {', '.join(opts)}"


# ------------------------------------------------------------------------- restore pre-flight and safety
TARGET_DATABASE = ("SELECT name, state_desc, user_access_desc, recovery_model_desc, CASE WHEN replica_id IS NULL "
                   "THEN 0 ELSE 1 END AS in_ag FROM sys.databases WHERE name = ?")
TARGET_AG = ("SELECT ag.name AS ag_name, drs.is_primary_replica FROM sys.dm_hadr_database_replica_states AS drs "
             "JOIN sys.availability_groups AS ag ON ag.group_id = drs.group_id "
             "WHERE drs.database_id = DB_ID(?) AND drs.is_local = 1")
USER_SESSIONS = ("SELECT session_id FROM sys.dm_exec_sessions WHERE database_id = DB_ID(?) AND "
                 "is_user_process = 1")
ENABLE_CONTAINMENT = "EXEC sp_configure 'contained database authentication', 1; RECONFIGURE;"   # 12824's fix
CONTAINMENT = "SELECT value_in_use FROM sys.configurations WHERE name = N'contained database authentication'"
INSTANCE = ("SELECT SERVERPROPERTY('ProductVersion') AS version, SERVERPROPERTY('InstanceDefaultDataPath') "
            "AS data_path, SERVERPROPERTY('InstanceDefaultLogPath') AS log_path")


def header_only(devices: Sequence[str]) -> str:
    return f"RESTORE HEADERONLY FROM {devices_clause(devices)}"


def single_user(name: str) -> str:
    """End every other session at once (their open transactions roll back) and keep one connection in."""
    return f"ALTER DATABASE {quote_name(name)} SET SINGLE_USER WITH ROLLBACK IMMEDIATE"


def multi_user(name: str) -> str:
    return f"ALTER DATABASE {quote_name(name)} SET MULTI_USER"


def tail_log_backup(name: str, device: str, stats_percent: int) -> str:
    """The tail of the log before an in-place restore: NORECOVERY leaves the database RESTORING."""
    return (f"BACKUP LOG {quote_name(name)} TO DISK = {literal(device)} WITH NORECOVERY, CHECKSUM, FORMAT, INIT, "
            f"STATS = {int(stats_percent)}")


def recover_only(name: str) -> str:
    """Bring a RESTORING database (e.g. after a tail-log backup) back ONLINE without restoring anything."""
    return f"RESTORE DATABASE {quote_name(name)} WITH RECOVERY"


def check_db(name: str) -> str:
    return f"DBCC CHECKDB ({quote_name(name)}) WITH NO_INFOMSGS, ALL_ERRORMSGS"


def drop_statements(name: str, state: str) -> list[str]:
    """DROP a scratch database: an ONLINE one after ending its sessions; any other state (RESTORING, OFFLINE,
    SUSPECT) directly - ALTER DATABASE is not permitted while it is RESTORING (5052)."""
    return drop_database(name) if state == "ONLINE" else [f"DROP DATABASE {quote_name(name)}"]


def drop_database(name: str) -> list[str]:
    """End every session of the database, then drop it (its data and log files go with it)."""
    quoted = quote_name(name)
    return [f"ALTER DATABASE {quoted} SET SINGLE_USER WITH ROLLBACK IMMEDIATE", f"DROP DATABASE {quoted}"]


# ------------------------------------------------------------------------------------ RESTORE ... MOVE
_UNSAFE_FILE_CHARS = re.compile(r'[\\/:*?"<>|\x00-\x1f]')
_DEFAULT_EXT = {"D": ".ndf", "L": ".ldf", "F": ".ndf"}


def join_path(directory: str, name: str) -> str:
    """Join with the directory's own separator (``\\`` for Windows paths, ``/`` for SQL Server on Linux)."""
    windows = "\\" in directory or re.match(r"^[A-Za-z]:", directory) is not None
    sep = "\\" if windows else "/"
    return directory.rstrip("\\/") + sep + name


def plan_moves(database: str, files: Sequence[Mapping[str, Any]], data_path: str | None,
               log_path: str | None) -> list[tuple[str, str]]:
    """MOVE pairs from RESTORE FILELISTONLY rows: ``<dir>/<database>_<logical><ext>`` per logical file.

    Log files go to ``log_path`` (default ``data_path``); data, full-text and FILESTREAM files to
    ``data_path``. Files whose directory is not given keep the backup's path (no MOVE).
    """
    log_path = log_path or data_path
    moves = []
    for row in files:
        logical, physical = str(row["LogicalName"]), str(row.get("PhysicalName") or "")
        kind = str(row.get("Type") or "D").upper()
        directory = log_path if kind == "L" else data_path
        if not directory:
            continue
        base = physical.replace("\\", "/").rsplit("/", 1)[-1]
        ext = base[base.rfind("."):] if "." in base and kind != "S" else ""
        if kind != "S" and not ext:
            ext = ".mdf" if int(row.get("FileID") or row.get("FileId") or 0) == 1 else _DEFAULT_EXT.get(kind, ".ndf")
        file_name = _UNSAFE_FILE_CHARS.sub("_", f"{database}_{logical}") + ext
        moves.append((logical, join_path(directory, file_name)))
    return moves
