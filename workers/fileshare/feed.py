"""What the sync hands to the readers, and when: small files in batches (one request each, many per task),
large files one per task; a task goes out only when the job's memory budget has room for its bytes (see
``budget``), so readers never hold more content than budgeted, whatever the file sizes. The sync calls
``pump`` from its loop (never blocking: it keeps draining results, which give budget back via ``done``).
"""
from __future__ import annotations

from collections import deque
from typing import Callable, NamedTuple

from workers.fileshare.budget import stream_cost
from workers.fileshare.messages import FileToRead, ReadFiles
from workers.fileshare.readers import SMALL
from workers.fileshare.tree import Stat
from workers.repository.budget import Budget

BATCH_FILES, BATCH_BYTES = 32, 2 << 20


class Ready(NamedTuple):
    files: list[FileToRead]
    cost: int                   # the budget its reads hold


class Feed:
    def __init__(self, budget: Budget, chunk_max: int, submit: Callable[[ReadFiles], None]) -> None:
        self.budget, self.submit = budget, submit
        self.stream = stream_cost(chunk_max)
        self.batch: list[FileToRead] = []
        self.batch_bytes = 0
        self.ready: deque[Ready] = deque()
        self.cost: dict[int, int] = {}                           # file id -> budget it holds while read
        self.reading = 0

    def add(self, file_id: int, rel: str, listed: Stat) -> None:
        if listed.size > SMALL:
            self.ready.append(Ready([FileToRead(file_id, rel, listed)], self.stream))
            return
        self.batch.append(FileToRead(file_id, rel, listed))
        self.batch_bytes += listed.size
        if len(self.batch) >= BATCH_FILES or self.batch_bytes >= BATCH_BYTES:
            self.seal()

    def seal(self) -> None:
        """The batch being filled is ready to go (full, or nothing more will join it soon)."""
        if self.batch:
            self.ready.append(Ready(self.batch, 2 * self.batch_bytes))    # read, then cut into blobs on their way
            self.batch, self.batch_bytes = [], 0

    def pump(self) -> None:
        while self.ready and self.budget.try_take(self.ready[0].cost):
            files = self.ready.popleft().files
            for file in files:
                self.cost[file.file_id] = self.stream if file.listed.size > SMALL else 2 * file.listed.size
            self.reading += len(files)
            self.submit(ReadFiles(files))

    def done(self, file_id: int) -> None:
        """A file's result came back: its budget is free again."""
        self.reading -= 1
        self.budget.give(self.cost.pop(file_id, 0))

    @property
    def idle(self) -> bool:
        return not (self.batch or self.ready)
