"""A scripted fake of a pyodbc connection and cursor, shaped like SQL Server through ODBC Driver 18.

A script is the exact list of statements an engine must run, in order, each with its bind parameters and
what SQL Server answers: result sets (rows), info messages per result set (``cursor.messages`` as pyodbc
exposes them: ``('[01000] (3211)', '[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]10 percent
processed.')``), and errors - raised by ``execute`` or only when ``nextset()`` reaches a later result set,
like a BACKUP that fails after its progress messages. The fake raises real ``pyodbc.Error`` subclasses.

It also fails the test when a statement is executed (or the connection closed) before the previous one was
drained to its last result set: with the real driver that silently drops the rest of the backup's messages
and errors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Sequence

import pyodbc

from workers.engines.sqlserver_sql import BACKUP_HISTORY, DATABASE_STATE

PREFIX = "[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]"


def info(number: int, text: str, state: str = "01000") -> tuple[str, str]:
    """An informational message as pyodbc lists it in ``cursor.messages``."""
    return (f"[{state}] ({number})", f"{PREFIX}{text}")


def sql_error(*records: tuple[int, str], state: str = "42000",
              cls: type[pyodbc.Error] = pyodbc.ProgrammingError) -> pyodbc.Error:
    """A pyodbc error carrying one or more SQL Server records, joined the way pyodbc joins them."""
    text = "; ".join(f"[{state}] {PREFIX}{msg} ({number})" for number, msg in records) + " (SQLExecDirectW)"
    return cls(state, text)


def odbc_error(state: str, text: str, cls: type[pyodbc.Error] = pyodbc.OperationalError) -> pyodbc.Error:
    """A driver-level error (no SQL Server number), e.g. 08S01 communication link failure or HYT00."""
    return cls(state, f"[{state}] [Microsoft][ODBC Driver 18 for SQL Server]{text} (0) (SQLExecDirectW)")


@dataclass
class ResultSet:
    columns: Sequence[str] | None = None            # None: no rows (a BACKUP progress "result")
    rows: Sequence[Sequence[Any]] = ()
    messages: Sequence[tuple[str, str]] = ()
    error: BaseException | None = None              # raised when nextset() moves onto this set


def rows(columns: Sequence[str], *values: Sequence[Any], messages: Sequence[tuple[str, str]] = ()) -> ResultSet:
    return ResultSet(columns=list(columns), rows=[tuple(v) for v in values], messages=list(messages))


def progress_sets(*percents: int, final: str | None = None) -> list[ResultSet]:
    """One result set per STATS message, like SQL Server streams them, then an optional summary message."""
    sets = [ResultSet(messages=[info(3211, f"{p} percent processed.")]) for p in percents]
    if final:
        sets.append(ResultSet(messages=[info(3014, final)]))
    return sets or [ResultSet()]


@dataclass
class Expect:
    sql: str
    params: tuple[Any, ...] = ()
    results: list[ResultSet] = field(default_factory=lambda: [ResultSet()])
    error: BaseException | None = None              # raised by execute() itself


class FakeCursor:
    def __init__(self, odbc: "FakeOdbc") -> None:
        self._odbc = odbc
        self._sets: list[ResultSet] = []
        self._index = 0
        self._fetched = False
        self.messages: list[tuple[str, str]] = []
        self.description: Any = None

    # -- pyodbc API
    def execute(self, sql: str, *params: Any) -> "FakeCursor":
        self._require_drained(f"executing {sql!r}")
        self._odbc.executed.append((sql, tuple(params)))
        step = self._odbc.next_step(sql, tuple(params))
        if step.error is not None:
            self._sets = []
            raise step.error
        self._sets, self._index = list(step.results), 0
        self._enter()
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        if self.description is None:
            raise pyodbc.ProgrammingError("24000", "No results.  Previous SQL was not a query.")
        self._fetched = True
        return list(self._sets[self._index].rows)

    def fetchone(self) -> tuple[Any, ...] | None:
        all_rows = self.fetchall()
        return all_rows[0] if all_rows else None

    def nextset(self) -> bool:
        if self._index + 1 >= len(self._sets):
            self._sets, self._index, self.messages, self.description = [], 0, [], None
            return False
        self._index += 1
        self._enter()
        return True

    def close(self) -> None:
        self._odbc.cursors_closed += 1

    # -- internals
    def _enter(self) -> None:
        current = self._sets[self._index]
        if current.error is not None:
            failed = current.error
            self._sets, self._index, self.messages, self.description = [], 0, [], None
            raise failed
        self.messages = list(current.messages)
        self.description = None if current.columns is None else tuple((c, str, None, None, None, None, True)
                                                                       for c in current.columns)
        self._fetched = False

    def _require_drained(self, what: str) -> None:
        if self._index + 1 < len(self._sets):
            raise AssertionError(f"{what} while the previous statement still has "
                                 f"{len(self._sets) - self._index - 1} unread result set(s): not drained")


class FakeConnection:
    def __init__(self, odbc: "FakeOdbc") -> None:
        self._odbc = odbc
        self.timeout = 0
        self.autocommit = True
        self.closed = False
        self._cursors: list[FakeCursor] = []

    def cursor(self) -> FakeCursor:
        cursor = FakeCursor(self._odbc)
        self._cursors.append(cursor)
        return cursor

    def close(self) -> None:
        for cursor in self._cursors:
            cursor._require_drained("closing the connection")
        self.closed = True

    def commit(self) -> None:
        raise AssertionError("commit() called: BACKUP/RESTORE must run with autocommit")


class FakeOdbc:
    """``FakeOdbc(script).connect`` replaces ``pyodbc.connect`` in an engine."""

    def __init__(self, script: Sequence[Expect] = (), *, connect_error: BaseException | None = None) -> None:
        self.script = list(script)
        self.connect_error = connect_error
        self.executed: list[tuple[str, tuple[Any, ...]]] = []
        self.connections: list[FakeConnection] = []
        self.connection_strings: list[str] = []
        self.connect_kwargs: list[dict[str, Any]] = []
        self.cursors_closed = 0

    def connect(self, connection_string: str, **kwargs: Any) -> FakeConnection:
        if kwargs.get("autocommit") is not True:
            raise AssertionError(f"connect() without autocommit=True: {kwargs}")
        self.connection_strings.append(connection_string)
        self.connect_kwargs.append(kwargs)
        if self.connect_error is not None:
            raise self.connect_error
        connection = FakeConnection(self)
        self.connections.append(connection)
        return connection

    def next_step(self, sql: str, params: tuple[Any, ...]) -> Expect:
        position = len(self.executed)
        if not self.script:
            raise AssertionError(f"unexpected statement #{position}: {sql!r} {params!r}")
        step = self.script.pop(0)
        if (step.sql, step.params) != (sql, params):
            raise AssertionError(f"statement #{position} differs:\n  expected {step.sql!r} {step.params!r}\n"
                                 f"  got      {sql!r} {params!r}")
        return step

    def assert_done(self) -> None:
        """Every scripted statement ran and every connection was closed."""
        assert not self.script, f"{len(self.script)} scripted statement(s) never ran: {self.script[0].sql!r}"
        assert all(c.closed for c in self.connections), "a connection was left open"


# ---------------------------------------------------------------------------- SQL Server script helpers
def lookup(name: str, state: str | None = "ONLINE", in_ag: int = 0, asked: str | None = None) -> Expect:
    """The sys.databases lookup every backup starts with; ``state=None``: no such database."""
    found = [rows(["name", "state_desc", "in_ag"], (name, state, in_ag))] if state else [rows(["name"])]
    return Expect(DATABASE_STATE, (asked or name,), found)


def history(name: str, device: str, size: int = 10485760) -> Expect:
    """msdb backup history for the backup just taken (LSNs as SQL Server's numeric(25,0))."""
    return Expect(BACKUP_HISTORY, (name, device),
                  [rows(["first_lsn", "last_lsn", "database_backup_lsn", "backup_size", "compressed_backup_size"],
                        (Decimal("37000000012800037"), Decimal("37000000014400001"), Decimal("36000000000800001"),
                         Decimal(size * 5), Decimal(size)))])


def verify_ok(*devices: str) -> Expect:
    disks = ", ".join(f"DISK = N'{d}'" for d in devices)
    return Expect(f"RESTORE VERIFYONLY FROM {disks} WITH CHECKSUM",
                  results=[ResultSet(messages=[info(3262, "The backup set on file 1 is valid.")])])


def backup_ok(statement: str, *percents: int) -> Expect:
    return Expect(statement, results=progress_sets(*percents, final="BACKUP DATABASE successfully processed "
                                                                    "6402 pages in 0.311 seconds (160.8 MB/sec)."))
