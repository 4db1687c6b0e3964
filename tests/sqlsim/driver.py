"""The pyodbc-shaped face of the simulator: ``connect()``, connections, cursors, result sets and messages.

Behaves like pyodbc over ODBC Driver 18 (https://github.com/mkleehammer/pyodbc/wiki/Cursor): ``execute`` returns
after the first result set, ``nextset()`` moves on (and raises an error SQL Server sent later in the stream),
``messages`` holds the current result set's informational messages, ``description`` is None for a result
without rows. A statement left with unread result sets when the next one runs or the connection closes fails
the test: with the real driver its later errors would be lost silently.
"""
from __future__ import annotations

import re
from typing import Any

import pyodbc

from tests.sqlsim import admin, backup, security
from tests.sqlsim.errors import LANGUAGE, SqlError, driver_error, fail, record, to_pyodbc
from tests.sqlsim.lexer import Tokens, tokenize
from tests.sqlsim.results import Outcome, ResultSet
from tests.sqlsim.select import select
from tests.sqlsim.state import Login, Server

_PAIR = re.compile(r"([^=;]+)=(\{(?:[^}]|\}\})*\}|[^;]*)")


def parse_connection_string(text: str) -> dict[str, str]:
    values = {}
    for key, value in _PAIR.findall(text):
        if value.startswith("{"):
            value = value[1:-1].replace("}}", "}")
        values[key.strip().upper()] = value
    return values


def run(server: Server, login: Login, autocommit: bool, sql: str, params: tuple[Any, ...]) -> Outcome:
    LANGUAGE["language"] = server.language
    if server.faults.link_error is not None:
        sqlstate, text = server.faults.link_error
        server.faults.link_error = None
        raise driver_error(sqlstate, text)
    tokens = Tokens(tokenize(sql, params))
    if security.starts_security_batch(tokens):
        return security.run_batch(server, login, tokens)
    verb = tokens.accept("SELECT", "BACKUP", "RESTORE", "ALTER", "DROP", "DBCC", "CREATE")
    if verb == "SELECT":
        return select(server, login, tokens)
    if verb == "BACKUP":
        return backup.backup(server, login, autocommit, tokens)
    if verb == "RESTORE":
        return backup.restore(server, login, autocommit, tokens)
    if verb == "ALTER":
        return admin.alter(server, login, tokens)
    if verb == "DROP":
        return admin.drop(server, login, tokens)
    if verb == "DBCC":
        return admin.dbcc(server, login, tokens)
    if verb == "CREATE":
        tokens.expect("CREDENTIAL")
        return admin.credential(server, login, tokens, create=True)
    raise tokens.unexpected()


class Cursor:
    def __init__(self, connection: "Connection") -> None:
        self.connection = connection
        self._sets: list[ResultSet] = []
        self._error: SqlError | None = None
        self._index = 0
        self.messages: list[tuple[str, str]] = []
        self.description: Any = None

    def execute(self, sql: str, *params: Any) -> "Cursor":
        self.require_drained(f"executing {sql[:60]!r}")
        self.connection.sim.executed.append((sql, params))
        try:
            outcome = run(self.connection.sim.server, self.connection.login, self.connection.autocommit, sql,
                          params)
        except SqlError as exc:
            self._sets, self._error = [], None
            raise to_pyodbc(exc) from None
        if outcome.error is not None and self.connection.sim.split_errors and len(outcome.error.records) > 1:
            *causes, last = outcome.error.records
            outcome.sets.append(ResultSet(messages=causes))
            outcome.error = SqlError(last)
        self._sets, self._error, self._index = outcome.sets or [], outcome.error, 0
        if not self._sets:
            self._sets = [ResultSet()]
            if self._error is not None:
                failed, self._error, self._sets = self._error, None, []
                raise to_pyodbc(failed)
        self._enter()
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        if self.description is None:
            raise pyodbc.ProgrammingError("24000", "No results.  Previous SQL was not a query.")
        rows, self._sets[self._index].rows = self._sets[self._index].rows, []
        return list(rows)

    def fetchone(self) -> tuple[Any, ...] | None:
        if self.description is None:
            raise pyodbc.ProgrammingError("24000", "No results.  Previous SQL was not a query.")
        rows = self._sets[self._index].rows
        return rows.pop(0) if rows else None

    def nextset(self) -> bool:
        if self._index + 1 < len(self._sets):
            self._index += 1
            self._enter()
            return True
        self._sets, self._index, self.messages, self.description = [], 0, [], None
        if self._error is not None:
            failed, self._error = self._error, None
            raise to_pyodbc(failed)
        return False

    def close(self) -> None:
        self._sets, self._error = [], None

    def _enter(self) -> None:
        current = self._sets[self._index]
        self.messages = [m.as_message() for m in current.messages]
        self.description = None if current.columns is None else tuple(
            (c, object, None, None, None, None, True) for c in current.columns)

    def require_drained(self, what: str) -> None:
        if self._index + 1 < len(self._sets) or self._error is not None:
            raise AssertionError(f"{what} while the previous statement still has unread result sets: not drained")


class Connection:
    def __init__(self, sim: "Simulator", login: Login, autocommit: bool) -> None:
        self.sim, self.login, self.autocommit = sim, login, autocommit
        self.timeout = 0
        self.closed = False
        self._cursors: list[Cursor] = []

    def cursor(self) -> Cursor:
        self._cursors.append(Cursor(self))
        return self._cursors[-1]

    def commit(self) -> None:
        pass

    def close(self) -> None:
        for cursor in self._cursors:
            cursor.require_drained("closing the connection")
        self.closed = True


class Simulator:
    """One SQL Server instance; ``Simulator(server).connect`` replaces ``pyodbc.connect``."""

    def __init__(self, server: Server, *, split_errors: bool = False) -> None:
        self.server = server
        # split_errors: the cause arrives as a message of an earlier result and only 3013 as the error, as some
        # driver versions deliver a failed BACKUP/RESTORE; the engine must still name and classify the cause
        self.split_errors = split_errors
        self.executed: list[tuple[str, tuple[Any, ...]]] = []
        self.connections: list[Connection] = []
        self.connect_kwargs: list[dict[str, Any]] = []
        self.connection_strings: list[str] = []
        self.refusal: pyodbc.Error | None = None     # the network / TLS layer refuses (no SQL Server number)

    def refuse(self, sqlstate: str, text: str) -> None:
        self.refusal = driver_error(sqlstate, text, "SQLDriverConnect")

    def connect(self, connection_string: str, *, autocommit: bool = False, timeout: int = 0,
                **_: Any) -> Connection:
        self.connection_strings.append(connection_string)
        self.connect_kwargs.append({"autocommit": autocommit, "timeout": timeout})
        if self.refusal is not None:
            raise self.refusal
        values = parse_connection_string(connection_string)
        user = values.get("UID", "")
        login = self.server.logins.get(user)
        if login is None or login.password != values.get("PWD"):
            raise to_pyodbc(SqlError(record(18456, user)), "SQLDriverConnect")
        database = values.get("DATABASE", "master")
        if database in login.denied_databases or database != "master" and (self.server.database(database) is None
                                     or not login.sysadmin and database not in login.database_roles):
            raise to_pyodbc(fail(4060, database), "SQLDriverConnect")
        connection = Connection(self, login, autocommit)
        self.connections.append(connection)
        return connection

    def statements(self, verb: str) -> list[str]:
        return [sql for sql, _ in self.executed if sql.upper().startswith(verb.upper())]

    def assert_closed(self) -> None:
        assert all(c.closed for c in self.connections), "a connection was left open"
