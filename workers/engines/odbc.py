"""pyodbc plumbing shared by the engines: connection strings, draining every result set and message.

SQL Server sends BACKUP/RESTORE progress and errors as a stream of messages and result sets; pyodbc returns
from ``execute`` after the first one. Only ``while cursor.nextset()`` until it returns False makes the call
wait for the statement to finish and surfaces an error raised later in the stream.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Protocol, Sequence

ConnectFn = Callable[..., Any]
"""``connect(connection_string, autocommit=True, timeout=seconds)`` -> a pyodbc-like connection."""

Message = tuple[str, str]
"""As pyodbc exposes ``cursor.messages``: (``'[01000] (3211)'``, ``'[Microsoft]...[SQL Server]10 percent ...'``)."""

_NEEDS_BRACES = re.compile(r"[;{}=\s]|^$")
_DRIVER_PREFIX = re.compile(r"^(?:\[[^\]]*\]\s*)+")
_NATIVE = re.compile(r"\((-?\d+)\)")


class Cursor(Protocol):
    description: Any
    messages: list[Message] | None

    def execute(self, sql: str, *params: Any) -> Any: ...

    def fetchall(self) -> list[Sequence[Any]]: ...

    def nextset(self) -> bool | None: ...

    def close(self) -> None: ...


def braced(value: str) -> str:
    """An ODBC connection-string value in braces (``}`` doubled): safe for ``;``, ``=`` and spaces."""
    return "{" + value.replace("}", "}}") + "}"


def connection_string(pairs: Iterable[tuple[str, str | None]], *, always_brace: Iterable[str] = ()) -> str:
    """``KEY=value;...`` skipping None values; values that need it (or keys in ``always_brace``) are braced."""
    forced = {k.upper() for k in always_brace}
    parts = []
    for key, value in pairs:
        if value is None:
            continue
        if key.upper() in forced or _NEEDS_BRACES.search(value):
            value = braced(value)
        parts.append(f"{key}={value}")
    return ";".join(parts)


def native_number(message: Message) -> int | None:
    """The native error number of a pyodbc message tuple ('[01000] (3211)' -> 3211)."""
    found = _NATIVE.search(message[0]) if message else None
    return int(found.group(1)) if found else None


def clean_text(text: str) -> str:
    """Drop driver prefixes like ``[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]`` and call names."""
    records = []
    for record in re.split(r";\s*(?=\[[0-9A-Z]{5}\])", text):
        record = _DRIVER_PREFIX.sub("", record.strip())
        record = re.sub(r"\s*\(SQL\w+\)\s*$", "", record)
        records.append(record.strip())
    return "; ".join(r for r in records if r)


def error_numbers(text: str) -> list[int]:
    """Native error numbers in a pyodbc error text, in order ('... (3201) ...; ... (3013)' -> [3201, 3013])."""
    return [int(n) for n in _NATIVE.findall(text)]


def error_parts(exc: BaseException) -> tuple[str, str]:
    """(sqlstate, text) of a pyodbc.Error: its args are ``(sqlstate, message)``."""
    args = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[0], str):
        return args[0], str(args[1])
    return "", str(exc)


def rows_of(cursor: Cursor) -> list[dict[str, Any]]:
    """The current result set as dicts keyed by column name."""
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row)) for row in cursor.fetchall()]


def drain(cursor: Cursor, on_message: Callable[[Message], None] | None = None) -> list[list[dict[str, Any]]]:
    """Read every result set and message of the statement just executed; return the row sets.

    pyodbc replaces ``cursor.messages`` at each ``nextset()``, so messages are handed out per result set.
    An error in any later result set raises here (from ``nextset``), not silently later.
    """
    sets: list[list[dict[str, Any]]] = []
    while True:
        for message in list(cursor.messages or []):
            if on_message is not None:
                on_message(message)
        if cursor.description is not None:
            sets.append(rows_of(cursor))
        if not cursor.nextset():
            return sets
