"""After a RESTORE ... WITH NORECOVERY: RESTORE LOG (the log chain, LSN checks) and RESTORE DATABASE x WITH
RECOVERY. https://learn.microsoft.com/en-us/sql/relational-databases/backup-restore/apply-transaction-log-backups-sql-server
and "Recover a database without restoring data" in
https://learn.microsoft.com/en-us/sql/t-sql/statements/restore-statements-transact-sql
"""
from __future__ import annotations

from tests.sqlsim.errors import SqlError, fail, record
from tests.sqlsim.lexer import Tokens
from tests.sqlsim.media import restored_content
from tests.sqlsim.results import Outcome
from tests.sqlsim.state import Login, Server


def restore_log(server: Server, name: str, header, payload: bytes, norecovery: bool, percents: list[int],
                device: str, stop: str, outcome: Outcome) -> None:
    """RESTORE LOG onto a RESTORING database: the log must include the LSN the database was restored to."""
    database = server.database(name)
    if header.backup_type != 2:
        raise fail(3135, device, "BACKUP DATABASE", terminating=stop)
    if database is None or database.state != "RESTORING" or database.restored_to is None:
        raise fail(3117, terminating=stop)
    if header.first_lsn > database.restored_to:
        raise fail(4305, header.first_lsn, database.restored_to, terminating=stop)
    if header.last_lsn <= database.restored_to:
        raise fail(4326, header.last_lsn, database.restored_to, terminating=stop)
    for percent in percents:
        outcome.say(record(3211, percent))
    database.rows = dict(restored_content(payload)["rows"])
    database.restored_to = header.last_lsn
    database.last_lsn = header.last_lsn + 1
    if not norecovery:
        database.state, database.restored_to = "ONLINE", None
    server.restored(name, "L")
    outcome.say(record(3014, "RESTORE LOG", 12, 21))


def recover_only(server: Server, login: Login, name: str, tokens: Tokens) -> Outcome:
    """``RESTORE DATABASE name WITH RECOVERY``: bring a RESTORING database online without restoring anything
    ("Recover a database without restoring data" in RESTORE Statements). A database whose restore stopped
    halfway cannot be recovered (4333); one that is not RESTORING: 3013 only (simplified)."""
    tokens.expect("RECOVERY")
    tokens.end()
    database = server.database(name)
    if not login.may("CREATE ANY DATABASE"):
        raise fail(262, "CREATE DATABASE", "master", terminating="RESTORE DATABASE")
    if database is None:
        raise fail(911, name, terminating="RESTORE DATABASE")
    if database.state != "RESTORING":
        raise SqlError(record(3013, "RESTORE DATABASE"))
    if database.incomplete:
        raise fail(4333, terminating="RESTORE DATABASE")
    database.state, database.restored_to = "ONLINE", None
    return Outcome()
