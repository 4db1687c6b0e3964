"""The DatabaseEngine interface (back up to a staging path, verify, restore, check) and its results.

Engines classify their failures where they happen: :class:`~workers.runtime.errors.TransientError` for
lost connections and timeouts, :class:`~workers.runtime.errors.PermanentError` (with a how-to-fix hint) for
missing databases, refused logins and unusable backup locations. Messages never contain passwords.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol, runtime_checkable

from workers.runtime.errors import PermanentError

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
"""Called with a percentage (0-100, never decreasing) while a backup or restore runs."""

SKIPPED_NOT_PREFERRED = "skipped: not the preferred replica"
ONLINE = "ONLINE"


@dataclass(frozen=True)
class BackupResult:
    database: str
    path: str                           # the staging path (or first stripe / URL) the backup went to
    size: int                           # bytes written (sum over stripes); 0 when skipped
    duration: float                     # seconds
    engine: str                         # "sqlserver" | "postgres"
    server: str                         # host[,port] - never credentials
    skipped_reason: str | None = None   # set when nothing was backed up on purpose (not a failure)
    first_lsn: str | None = None        # SQL Server only (msdb.dbo.backupset)
    last_lsn: str | None = None
    database_backup_lsn: str | None = None
    checksum: str | None = None         # "sha256:<hex>" of the staged file(s), when the worker can read them
    parts: tuple[str, ...] = ()         # every stripe, in order (one entry for an unstriped backup)
    part_checksums: tuple[str, ...] = ()  # "sha256:<hex>" of each part, when the worker can read them
    server_version: str | None = None   # SQL Server: the version that wrote the backup (msdb), e.g. 16.0.4135
    started_at: str | None = None       # ISO 8601 UTC: when the BACKUP statement was sent / returned
    finished_at: str | None = None
    copy_only: bool | None = None       # SQL Server: COPY_ONLY (leaves the DBA's backup chain alone)

    @property
    def skipped(self) -> bool:
        return self.skipped_reason is not None


@dataclass(frozen=True)
class RestoreResult:
    database: str
    source_path: str
    duration: float
    engine: str
    server: str
    state: str = ONLINE                 # the database state checked after the restore
    tables: int | None = None           # user tables found after the restore (PostgreSQL)
    rows: int | None = None             # rows in those tables (PostgreSQL, exact count)
    tail_log: str | None = None         # SQL Server: the tail-log backup taken before an in-place restore
    warnings: tuple[str, ...] = ()      # what the pre-flight let through but the operator should know


@dataclass(frozen=True)
class RestoreOptions:
    """How careful a restore is; the defaults are a production restore's (refuse rather than guess).

    SQL Server checks all of them (RESTORE HEADERONLY, the target's state); PostgreSQL the ones that apply.
    """
    expected_database: str | None = None  # the database the backup must hold (the set's database)
    allow_database_mismatch: bool = False  # restore a backup of another database / over another database
    force_disconnect: bool = False        # end an ONLINE target's sessions (SET SINGLE_USER WITH ROLLBACK IMMEDIATE)
    allow_no_checksum: bool = False       # restore a backup taken without page checksums
    tail_log_dir: str | None = None       # in place: BACKUP LOG ... WITH NORECOVERY into this directory first
    scratch: bool = False                 # a drill's scratch database (a missing checksum is a warning only)


@runtime_checkable
class DatabaseEngine(Protocol):
    """Back up one database to a staging location, verify the backup, restore it.

    * ``check`` raises unless the database exists and can be backed up (SQL Server: it is ONLINE).
    * ``backup`` returns only when the backup really finished (every result set and message drained); it may
      return a *skipped* result (Always On: not the preferred replica), which is not a failure.
    * ``verify`` raises :class:`PermanentError` when the staged backup is unreadable or incomplete.
    * ``restore`` replaces (or creates) ``database`` from ``source_path`` and checks it afterwards;
      ``data_path`` / ``log_path`` relocate the files where the engine supports it (SQL Server MOVE);
      ``options`` (:class:`RestoreOptions`) says what the pre-flight may let through.

    SQL Server also takes, for ``verify`` / ``restore`` / ``file_list``, the sequence of every stripe's path of a
    striped backup, and ``restore(..., logs=[...])`` log backups to apply after the full (``backup_log`` takes
    them); callers pass these only to an engine that has them.
    """

    name: str       # engine name: "sqlserver" | "postgres"
    server: str     # host[,port] for logs and results - never credentials

    def check(self, database: str) -> None: ...

    def backup(self, database: str, staging_path: str, progress: Progress | None = None) -> BackupResult: ...

    def verify(self, staging_path: str) -> None: ...

    def restore(self, database: str, source_path: str, *, data_path: str | None = None,
                log_path: str | None = None, progress: Progress | None = None,
                options: RestoreOptions | None = None) -> RestoreResult: ...

    def check_consistency(self, database: str) -> str:
        """Prove a restored database is internally consistent (SQL Server: DBCC CHECKDB; PostgreSQL: amcheck
        or a full read of every table); raises :class:`PermanentError` naming the damage, else says what ran."""
        ...

    def drop(self, database: str) -> None:
        """Drop a scratch database (drills) if it exists."""
        ...


class ProgressReporter:
    """Forwards increasing percentages to a callback; a failing callback is logged, never fatal."""

    def __init__(self, callback: Progress | None) -> None:
        self._callback = callback
        self.last = -1

    def __call__(self, percent: int) -> None:
        percent = max(0, min(100, int(percent)))
        if self._callback is None or percent <= self.last:
            return
        self.last = percent
        try:
            self._callback(percent)
        except Exception:  # noqa: BLE001 - progress is advisory
            log.warning("progress callback failed at %d%%", percent, exc_info=True)

    def done(self) -> None:
        self(100)


def sha256_of(paths: Iterable[str], chunk: int = 1024 * 1024) -> tuple[str, int]:
    """("sha256:<hex>", total size) of the files concatenated in order, read in chunks."""
    digest, size = hashlib.sha256(), 0
    for path in paths:
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                digest.update(block)
                size += len(block)
    return f"sha256:{digest.hexdigest()}", size


def locally_readable(paths: Iterable[str]) -> bool:
    """True when every path is a file this process can read (SQL Server may write where we cannot look)."""
    return all(os.path.isfile(p) and os.access(p, os.R_OK) for p in paths)


def stripe_paths(path: str, stripes: int) -> list[str]:
    """``db.bak`` -> [``db.bak``] or [``db.stripe1of3.bak``, ...]: works for POSIX and UNC paths."""
    if stripes <= 1:
        return [path]
    cut = max(path.rfind("/"), path.rfind("\\"))
    dot = path.rfind(".")
    stem, ext = (path[:dot], path[dot:]) if dot > cut + 1 else (path, "")
    return [f"{stem}.stripe{i}of{stripes}{ext}" for i in range(1, stripes + 1)]


def require_name(kind: str, value: str, *, max_length: int, forbidden: str = "") -> str:
    """Reject empty names, control characters, over-long names and ``forbidden`` characters."""
    bad = [c for c in value if ord(c) < 32 or ord(c) == 127 or c in forbidden]
    if not value or not value.strip() or len(value) > max_length or bad:
        raise PermanentError(f"invalid {kind} name {value[:80]!r}",
                             hint=f"A {kind} name is 1-{max_length} characters without control characters"
                                  + (f" or any of {forbidden!r}" if forbidden else "")
                                  + "; fix the name in APPSVC_DR_DATABASE__DATABASES or the request.")
    return value
