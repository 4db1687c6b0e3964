"""What a restore pre-flight found about a target database: whether it exists, how many user tables it holds
(None: not counted), and each problem that would stop a restore, with how to fix it. Engines fill it
(``restore_preflight``); `recover plan` turns it into the operator's list of what to fix."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Problem:
    what: str                       # what is wrong, naming the server / database / login
    fix: str                        # how to fix it (a statement, a setting, a command)


@dataclass
class TargetState:
    database: str
    exists: bool
    tables: int | None = None       # user tables found (an existing database with tables is "not empty")
    problems: list[Problem] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.exists or not self.tables
