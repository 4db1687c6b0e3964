"""The restore's target database outside the RESTORE statement: where its files go (:func:`move_dirs`: under
another name than the backup's always somewhere new, so no file keeps a path the original database may still
own), DBCC CHECKDB after a restore (silent when clean, corruption raised), dropping a database - a
RESTORING or OFFLINE one directly, without ALTER DATABASE (5052) - and what identifies a restore afterwards
(:func:`restore_identity`)."""
from __future__ import annotations

from typing import Any

CREATED = "SELECT name, create_date FROM sys.databases WHERE name = ?"
LAST_RESTORE = ("SELECT TOP (1) rh.restore_history_id, rh.restore_date FROM msdb.dbo.restorehistory AS rh "
                "WHERE rh.destination_database_name = ? ORDER BY rh.restore_history_id DESC")
from workers.engines import sqlserver_sql as tsql
from workers.runtime.errors import PermanentError


def move_dirs(data_path: str | None, log_path: str | None, target: str, held: str,
              instance: dict[str, Any]) -> tuple[str | None, str | None]:
    """Where the files go. In place: the given directories, else the backup's own paths. Under another name than
    the backup's: always somewhere new - the given directories, else the instance's default data / log
    directories - so no file keeps a path the original database may still own."""
    if target.casefold() == held.casefold():
        return data_path, log_path
    data = data_path or instance.get("data_path")
    logs = log_path or data_path or instance.get("log_path") or data
    if not data:
        raise PermanentError(f"restoring {held!r} as {target!r} needs a directory for its files and the server "
                             "does not report SERVERPROPERTY('InstanceDefaultDataPath')",
                             hint="Pass --data-path (and --log-path) with directories on the SQL Server host.")
    return str(data), str(logs)


def check_db(session: Any, database: str) -> str:
    """DBCC CHECKDB ... WITH NO_INFOMSGS, ALL_ERRORMSGS: silent when clean, errors (8939, 8928, 8989) raised."""
    quoted = tsql.quote_name(database)
    session.run(tsql.check_db(database), action=f"DBCC CHECKDB ({quoted})", database=database)
    return "DBCC CHECKDB: no allocation or consistency errors"


def drop(session: Any, database: str) -> None:
    """Drop ``database`` if it exists; a RESTORING (or OFFLINE) one directly, without ALTER DATABASE (5052)."""
    row = session.first(tsql.TARGET_DATABASE, database, action=f"look up database {database!r}")
    if row is None:
        return
    name = str(row["name"])
    for statement in tsql.drop_statements(name, str(row["state_desc"])):
        session.run(statement, action=statement.split(" WITH ")[0], database=name)


def restore_identity(session: Any, name: str) -> dict[str, Any]:
    """What tells a restore of ``name`` apart from any later change to it: when the database was created (a
    RESTORE creates it anew; so does a DROP and CREATE) and the id of msdb's newest restorehistory row for it (a
    later RESTORE adds one). `recover run` keeps it as a restored step's proof and compares it on a resume."""
    created = session.first(CREATED, name, action=f"look up database {name!r}")
    if created is None:
        raise PermanentError(f"database {name!r} does not exist", hint="Restore it again (recover run --resume).")
    last = session.first(LAST_RESTORE, name, action=f"read msdb's restore history of {name!r}")
    return {"created": created["create_date"].isoformat(timespec="microseconds"),
            "restore_id": int(last["restore_history_id"]) if last is not None else None}
