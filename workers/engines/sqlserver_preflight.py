"""`recover plan`'s look at a SQL Server before any restore: per target database, does it exist, how many user
tables does it hold, and what would stop a restore - each as a Problem with the exact fix, never an exception.

Read only (SELECTs on the catalog; nothing on the server changes). It reuses the restore's own checks:
the login's permissions (:mod:`.sqlserver_perms`: CREATE DATABASE for a new database; dbcreator and ALTER for
an in-place one), 'contained database authentication' (the App Service databases are partially contained:
12824 without it) and :meth:`SafeRestore.check_target` (an availability-group member with the commands that
remove it, open sessions without --force-disconnect, a SIMPLE recovery model under --tail-log-backup).
"""
from __future__ import annotations

from typing import Any, Sequence

from workers.engines import sqlserver_perms as perms
from workers.engines import sqlserver_sql as tsql
from workers.engines.base import ONLINE, RestoreOptions, require_name
from workers.engines.preflight import Problem, TargetState
from workers.engines.sqlserver_restore import SafeRestore
from workers.runtime.errors import DrError, PermanentError

# the catalog only: no user table is read. Three-part name: the session stays in its own database.
_USER_TABLES = "SELECT name FROM {}.sys.tables WHERE is_ms_shipped = 0"


def restore_preflight(session: Any, server: str, databases: Sequence[str], *, contained: bool = True,
                      options: RestoreOptions | None = None, stats_percent: int = 10) -> list[TargetState]:
    """One TargetState per database; ``contained``: the backups are of partially contained databases (App
    Service's are), so 'contained database authentication' must be on. ``options``: the restore's overrides
    (``force_disconnect``: open sessions are no problem; ``tail_log_dir``: an ONLINE target needs a log to back
    up). Connection errors raise."""
    facts = session.first(perms.SERVER_PERMISSIONS, action="read the login's permissions") or {}
    login = str(facts.get("login") or "<login>")
    rows: dict[str, dict[str, Any] | None] = {}
    granted: dict[str, dict[str, Any] | None] = {}
    for name in databases:
        require_name("database", name, max_length=tsql.SYSNAME_LENGTH)
        rows[name] = session.first(tsql.TARGET_DATABASE, name, action=f"look up database {name!r}")
        granted[name] = session.first(perms.DATABASE_PERMISSIONS, name, name, action="read the login's permissions")
    in_ag = {n: bool(r and int(r.get("in_ag") or 0)) for n, r in rows.items()}
    needs = {(p.database, p.task): p for p in perms.assess(facts, granted, in_ag)}
    options = options or RestoreOptions()
    out = []
    for name in databases:
        row = rows[name]
        state = TargetState(name, exists=row is not None)
        task = "restore in place" if row is not None else "restore"
        permission = needs[(name, task)]
        if not permission.granted:
            state.problems.append(Problem(f"login {login!r} on {server} may not {task} database {name!r}: it needs "
                                          f"{permission.needs}", permission.grant))
        if row is not None:
            _target(session, server, name, login, row, options, stats_percent, state)
        out.append(state)
    if contained and out:
        _containment(session, server, out[0])
    return out


def _target(session: Any, server: str, name: str, login: str, row: dict[str, Any], options: RestoreOptions,
            stats_percent: int, state: TargetState) -> None:
    safe = SafeRestore(session, server, name, [], options, stats_percent)
    checks = [safe.check_target] + ([safe.check_tail_log] if options.tail_log_dir and
                                     str(row.get("state_desc")) == ONLINE else [])
    for check in checks:
        try:
            check(row)
        except PermanentError as exc:
            state.problems.append(Problem(exc.message, exc.hint or "See the message."))
    if str(row.get("state_desc")) != ONLINE:
        return                                   # RESTORING / OFFLINE: its tables cannot be read (None)
    quoted = tsql.quote_name(str(row.get("name") or name))
    try:
        state.tables = len(session.rows(_USER_TABLES.format(quoted), action=f"count the user tables of {quoted}"))
    except DrError as exc:
        state.problems.append(Problem(f"cannot count the user tables of {quoted} on {server}: {exc.message}",
                                      f"Let the login see the database (USE {quoted}; CREATE USER "
                                      f"{tsql.quote_name(login, 'login')} FOR LOGIN {tsql.quote_name(login, 'login')};), or plan as a "
                                      "login that may (sysadmin)."))


def _containment(session: Any, server: str, state: TargetState) -> None:
    row = session.first(tsql.CONTAINMENT, action="read 'contained database authentication'")
    if row is not None and not int(row.get("value_in_use") or 0):
        state.problems.append(Problem(f"{server} has 'contained database authentication' off: the App Service "
                                      "databases are partially contained, RESTORE would fail (12824)",
                                      f"As sysadmin on {server} run {tsql.ENABLE_CONTAINMENT}"))
