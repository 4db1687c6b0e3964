"""What the SQL Server login may do, per configured database, and the exact statements that grant the rest.

Read with HAS_PERMS_BY_NAME and IS_SRVROLEMEMBER (nothing is changed on the server). What each task needs,
from the Permissions sections of the statements' reference pages:

* backup - BACKUP DATABASE: sysadmin, db_owner or db_backupoperator in the database (backup-transact-sql).
* verify - RESTORE VERIFYONLY / FILELISTONLY / HEADERONLY: CREATE DATABASE ("obtaining information about a
  backup set or backup device requires CREATE DATABASE permission", restore-statements-verifyonly). Without
  it backups rely on BACKUP ... WITH CHECKSUM (``verify_fallback``).
* restore (new database) - RESTORE: CREATE DATABASE when the database does not exist.
* restore in place - RESTORE over an existing database: sysadmin, dbcreator or the database's owner; taking it
  over (SET SINGLE_USER WITH ROLLBACK IMMEDIATE) needs ALTER on it (ALTER ANY DATABASE or db_owner).
* drill - restores a scratch copy (CREATE DATABASE); as its creator the login owns it, so DBCC CHECKDB and
  DROP DATABASE need nothing more.
* always on (databases in an availability group) - VIEW SERVER STATE for sys.dm_hadr_availability_replica_states,
  on every replica the worker may back up on (and the login must exist there).
https://learn.microsoft.com/en-us/sql/t-sql/functions/has-perms-by-name-transact-sql
https://learn.microsoft.com/en-us/sql/t-sql/functions/is-srvrolemember-transact-sql
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from workers.engines.sqlserver_sql import DATABASE_STATE

SERVER_PERMISSIONS = ("SELECT SUSER_SNAME() AS login, IS_SRVROLEMEMBER(N'sysadmin') AS sysadmin, "
                      "IS_SRVROLEMEMBER(N'dbcreator') AS dbcreator, "
                      "HAS_PERMS_BY_NAME(N'master', N'DATABASE', N'CREATE DATABASE') AS create_database, "
                      "HAS_PERMS_BY_NAME(NULL, NULL, N'ALTER ANY DATABASE') AS alter_any_database, "
                      "HAS_PERMS_BY_NAME(NULL, NULL, N'VIEW SERVER STATE') AS view_server_state")
DATABASE_PERMISSIONS = ("SELECT HAS_PERMS_BY_NAME(?, N'DATABASE', N'BACKUP DATABASE') AS backup_database, "
                        "HAS_PERMS_BY_NAME(?, N'DATABASE', N'ALTER') AS alter_database")


@dataclass(frozen=True)
class Permission:
    database: str
    task: str                   # backup | verify | restore | restore in place | drill | always on
    needs: str                  # what the task needs, in the docs' words
    granted: bool
    grant: str                  # the statement(s) that give it ("" when granted)


def _bracket(name: str) -> str:
    return "[" + name.replace("]", "]]") + "]"


def _literal(value: str) -> str:
    return "N'" + value.replace("'", "''") + "'"


def assess(server: Mapping[str, Any], databases: Mapping[str, Mapping[str, Any] | None],
           in_ag: Mapping[str, bool]) -> list[Permission]:
    """One row per database and task from the rows of SERVER_PERMISSIONS and DATABASE_PERMISSIONS
    (None: the database does not exist or the login cannot see it). NULL from HAS_PERMS_BY_NAME is "no"."""
    login = str(server.get("login") or "<login>")
    who = _bracket(login)
    sysadmin = server.get("sysadmin") == 1
    create = sysadmin or server.get("create_database") == 1
    dbcreator = sysadmin or server.get("dbcreator") == 1
    alter_any = sysadmin or server.get("alter_any_database") == 1
    create_grant = f"USE [master]; GRANT CREATE ANY DATABASE TO {who};"
    found = []
    for name, row in databases.items():
        row = row or {}
        db = _bracket(name)
        may_backup = sysadmin or row.get("backup_database") == 1
        may_alter = alter_any or row.get("alter_database") == 1
        user_grant = (f"USE {db}; IF USER_ID({_literal(login)}) IS NULL CREATE USER {who} FOR LOGIN {who}; "
                      f"ALTER ROLE [db_backupoperator] ADD MEMBER {who};")
        in_place = [] if dbcreator else [f"USE [master]; ALTER SERVER ROLE [dbcreator] ADD MEMBER {who};"]
        in_place += [] if may_alter else [f"USE [master]; GRANT ALTER ANY DATABASE TO {who};"]
        found += [
            Permission(name, "backup", "BACKUP DATABASE (db_backupoperator)", may_backup,
                       "" if may_backup else user_grant),
            Permission(name, "verify", "CREATE DATABASE for RESTORE VERIFYONLY / FILELISTONLY / HEADERONLY",
                       create, "" if create else create_grant),
            Permission(name, "restore", "CREATE DATABASE (restore as a new database)", create,
                       "" if create else create_grant),
            Permission(name, "restore in place", "dbcreator (or sysadmin / the database owner) and ALTER on the "
                       "database (SET SINGLE_USER)", not in_place, " ".join(in_place)),
            Permission(name, "drill", "CREATE DATABASE (a scratch copy it owns, checks and drops)", create,
                       "" if create else create_grant),
        ]
        if in_ag.get(name):
            view = sysadmin or server.get("view_server_state") == 1
            found.append(Permission(name, "always on", "VIEW SERVER STATE (replica states), on every replica",
                                    view, "" if view else f"USE [master]; GRANT VIEW SERVER STATE TO {who};"))
    return found


def read(query: Callable[..., list[dict[str, Any]]], databases: Sequence[str]) -> tuple[list[Permission], set[str]]:
    """Ask the server (``query(sql, *params)`` -> rows): the permissions per database, and the databases it
    does not show."""
    server = next(iter(query(SERVER_PERMISSIONS)), {})
    rows: dict[str, Mapping[str, Any] | None] = {}
    in_ag: dict[str, bool] = {}
    missing = set()
    for name in databases:
        state = next(iter(query(DATABASE_STATE, name)), None)
        if state is None:
            missing.add(name)
        in_ag[name] = bool(state and state["in_ag"])
        rows[name] = next(iter(query(DATABASE_PERMISSIONS, name, name)), None)
    return assess(server, rows, in_ag), missing


def render(permissions: list[Permission], missing_databases: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Lines for `config check --connect`: per database, has / LACKS per task, each lack with its GRANT."""
    lines, current = [], None
    for p in permissions:
        if p.database != current:
            current = p.database
            absent = " - NOT FOUND on the server (or the login cannot see it)" if current in missing_databases else ""
            lines.append(f"  {current}{absent}:")
        lines.append(f"    {'has  ' if p.granted else 'LACKS'} {p.task}: {p.needs}")
        if not p.granted:
            lines.append(f"          fix: {p.grant}")
    return lines
