"""SQL Server log backups in a backup set: ``<db>.log-<last LSN>.trn`` after the set's full backup.

``database-log-backup-requested`` for a set makes the db-backup worker take a ``BACKUP LOG`` and store it in
that set (``databases/appservice_hosting.log-0000037000000016000002.trn``), its record metadata holding
``backup_type = log`` and its first and last LSN. Log backups never count as a database for completeness
(:func:`is_log`) and go with their set when retention deletes it. A restore applies, after the full backup,
the log backups that continue its LSN chain (:func:`chain`): the first one must include the full's last LSN,
each next one begin where the one before ended; a gap is refused with the fix, never skipped silently.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from workers.runtime.errors import PermanentError

LOG_SUFFIX = ".trn"
_MARK = ".log-"


def log_name(database: str, last_lsn: str | None, fallback: str) -> str:
    """``appservice_hosting.log-<last LSN, 25 digits>.trn`` (sorts in chain order); ``fallback`` without an LSN."""
    tail = f"{int(last_lsn):025d}" if last_lsn and last_lsn.isdigit() else fallback
    return f"{database}{_MARK}{tail}{LOG_SUFFIX}"


def is_log(name: str) -> bool:
    return name.endswith(LOG_SUFFIX) and _MARK in name


def log_database(name: str) -> str:
    return name.rsplit(_MARK, 1)[0]


def _lsn(meta: Mapping | None, field: str, what: str) -> int:
    value = (meta or {}).get(field)
    if not isinstance(value, str) or not value.isdigit():
        raise PermanentError(f"{what} has no {field} in its record, so its place in the log chain is unknown",
                             hint="Restore without log backups (`--no-logs`): the full backup alone.")
    return int(value)


def chain(full_key: str, full_meta: Mapping | None, logs: Iterable[tuple[str, Mapping | None]]) -> list[str]:
    """The keys of the log backups to apply after ``full_key``, in LSN order; those ending before the full are
    left out. PermanentError on a gap (the chain is broken: a log backup is missing)."""
    logs = list(logs)
    if not logs:
        return []
    at = _lsn(full_meta, "last_lsn", full_key)
    ordered = sorted(((_lsn(m, "first_lsn", k), _lsn(m, "last_lsn", k), k) for k, m in logs))
    keys = []
    for first, last, key in ordered:
        if last <= at:
            continue                                  # taken before the full: not needed
        if first > at:
            raise PermanentError(f"the log chain of {full_key} is broken before {key}: it begins at LSN {first}, "
                                 f"the restore reached {at}",
                                 hint="A log backup is missing (taken by another job, or not stored). Restore "
                                      "without log backups (`--no-logs`) or up to the gap from a set whose chain "
                                      "is whole.")
        keys.append(key)
        at = last
    return keys
