"""ALTER DATABASE ... SET, DROP DATABASE, DBCC CHECKDB and CREATE/ALTER CREDENTIAL.

CHECKDB reports each damaged page as 8939 (the page failed its test) and 8928 (it could not be processed),
then the 8989 summary, as in the examples of MSSQLSERVER_8939 and MSSQLSERVER_8928:
https://learn.microsoft.com/en-us/sql/relational-databases/errors-events/mssqlserver-8939-database-engine-error

https://learn.microsoft.com/en-us/sql/t-sql/statements/alter-database-transact-sql-set-options (SINGLE_USER,
termination clause, not permitted while RESTORING: 5052),
https://learn.microsoft.com/en-us/sql/t-sql/statements/drop-database-transact-sql (in use: 3702),
https://learn.microsoft.com/en-us/sql/t-sql/database-console-commands/dbcc-checkdb-transact-sql,
https://learn.microsoft.com/en-us/sql/t-sql/statements/create-credential-transact-sql.
"""
from __future__ import annotations

from tests.sqlsim.errors import Record, SqlError, fail, record
from tests.sqlsim.lexer import Tokens
from tests.sqlsim.results import Outcome
from tests.sqlsim.state import Login, Server

_SETTINGS = {"SINGLE_USER", "RESTRICTED_USER", "MULTI_USER", "OFFLINE", "ONLINE"}


def alter(server: Server, login: Login, tokens: Tokens) -> Outcome:
    if tokens.accept("CREDENTIAL"):
        return credential(server, login, tokens, create=False)
    tokens.expect("DATABASE")
    name = tokens.name()
    tokens.expect("SET")
    setting = tokens.expect(*_SETTINGS)
    rollback = False
    if tokens.accept("WITH"):
        if tokens.accept("ROLLBACK"):
            tokens.expect("IMMEDIATE")
            rollback = True
        else:
            tokens.expect("NO_WAIT")
    tokens.end()
    database = server.database(name)
    if database is None or not login.in_role(name, "db_owner") and not login.may("ALTER ANY DATABASE"):
        raise SqlError(record(5011, name), record(5069))
    if database.state == "RESTORING" and setting != "ONLINE":
        raise SqlError(record(5052, "RESTORING"), record(5069))
    if database.ag_name and setting in ("SINGLE_USER", "OFFLINE", "RESTRICTED_USER"):
        raise SqlError(record(1468, name), record(5069))
    if setting in ("SINGLE_USER", "OFFLINE", "RESTRICTED_USER") and database.sessions:
        if not rollback:
            raise SqlError(record(5061, name), record(5069))
        database.sessions = 0
    if setting == "OFFLINE":
        database.state = "OFFLINE"
    elif setting == "ONLINE":
        database.state = "ONLINE" if database.state in ("OFFLINE", "RESTORING") else database.state
    else:
        database.user_access = setting
    return Outcome()


def drop(server: Server, login: Login, tokens: Tokens) -> Outcome:
    tokens.expect("DATABASE")
    name = tokens.name()
    tokens.end()
    database = server.database(name)
    if database is None or not login.in_role(name, "db_owner") and not login.may("ALTER ANY DATABASE"):
        raise fail(3701, name)
    if name in server.faults.drop_refused:
        raise fail(server.faults.drop_refused[name], name)
    if database.sessions:
        raise fail(3702, name)
    del server.databases[name]
    return Outcome()


def dbcc(server: Server, login: Login, tokens: Tokens) -> Outcome:
    tokens.expect("CHECKDB")
    tokens.expect_punct("(")
    name = tokens.string() if tokens.peek() and tokens.peek().kind in ("string", "value") else tokens.name()
    tokens.expect_punct(")")
    quiet = False
    if tokens.accept("WITH"):
        while True:
            quiet = tokens.expect("NO_INFOMSGS", "ALL_ERRORMSGS", "PHYSICAL_ONLY", "DATA_PURITY") == "NO_INFOMSGS" \
                or quiet
            if not tokens.accept_punct(","):
                break
    tokens.end()
    database = server.database(name)
    if database is None or database.state != "ONLINE":
        raise fail(2520, name)
    if not login.in_role(name, "db_owner"):
        raise fail(2571, login.name, "CHECKDB")
    outcome = Outcome()
    if database.corrupt_pages:
        found = [r for page in database.corrupt_pages for r in (record(8939, page), record(8928, page))]
        outcome.error = SqlError(*found,
                                 record(8989, 2 * len(database.corrupt_pages), name))
    elif not quiet:
        summary = record(8989, 0, name)
        outcome.say(Record(summary.number, summary.text, "01000"))
    return outcome


def credential(server: Server, login: Login, tokens: Tokens, *, create: bool) -> Outcome:
    name = tokens.name()
    tokens.expect("WITH")
    tokens.expect("IDENTITY")
    tokens.expect_punct("=")
    tokens.string()
    tokens.expect_punct(",")
    tokens.expect("SECRET")
    tokens.expect_punct("=")
    tokens.string()
    tokens.end()
    if not login.may("ALTER ANY CREDENTIAL") or (not create and name not in server.credentials):
        raise fail(15151, name)
    server.credentials.add(name)
    return Outcome()
