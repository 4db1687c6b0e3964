"""What a statement sends back: result sets (rows or none) each with its messages, and maybe a late error."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from tests.sqlsim.errors import Record, SqlError


@dataclass
class ResultSet:
    columns: Sequence[str] | None = None        # None: a "no rows" result (a message-only step of BACKUP)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    messages: list[Record] = field(default_factory=list)


@dataclass
class Outcome:
    sets: list[ResultSet] = field(default_factory=list)
    error: SqlError | None = None               # raised by execute() (no sets) or by nextset() reaching it

    def say(self, *records: Record) -> None:
        """Each informational message arrives as its own result, as SQL Server streams BACKUP progress."""
        for item in records:
            self.sets.append(ResultSet(messages=[item]))

    def table(self, columns: Sequence[str], rows: list[dict[str, Any]]) -> None:
        self.sets.append(ResultSet(list(columns), [tuple(r.get(c) for c in columns) for r in rows]))
