"""Files moved since the previous snapshot (a renamed file or directory), carried over without being read.

A path new to this snapshot is a move when it is one file of the previous snapshot (size > 0, not stored
unstable, same size, mtime and attributes) whose own path is no longer listed: which is known only once the
whole tree is listed, so candidates wait for ``resolve``. Which previous file it is:

* by file id, where the source gives one (SMB FileId, local inode) and the previous entry recorded one: the same
  id is that file, however many look-alikes there are; a different id is another file, never a move;
* otherwise by size, mtime and attributes alone, when exactly one previous file has them.

The old path still present (a copy, or a hard link), or two new paths claiming one old file: the new path is
read like any new file. Memory: one small-int key per previous file, and one id per previous file that has one
(the previous manifest is in memory already).
"""
from __future__ import annotations

from typing import NamedTuple

from workers.fileshare.tree import Stat
from workers.repository.manifest import Entry


class Move(NamedTuple):
    """A path new to this snapshot that may be a previous file moved there."""
    path: str
    st: Stat
    prev: Entry | None          # the previous file it carries over (None from ``resolve``: read it instead)


def _key(size: int, mtime_ns: int, attrs: int) -> int:
    return hash((size, mtime_ns, attrs))


class Moves:
    def __init__(self, previous: dict[str, Entry]) -> None:
        self._sources: dict[int, Entry | None] = {}          # None: several alike
        self._ids: dict[int, Entry | None] = {}              # file id -> entry; None: the id twice (hard links)
        for e in previous.values():
            if not e.is_dir and e.size and not e.unstable:
                key = _key(e.size, e.mtime_ns, e.attrs)
                self._sources[key] = None if key in self._sources else e
                if e.file_id:
                    self._ids[e.file_id] = None if e.file_id in self._ids else e
        self._listed: set[int] = set()                       # id() of previous entries whose path is listed
        self.pending: list[Move] = []

    def still_listed(self, prev: Entry) -> None:
        """``prev``'s path is in this listing: it did not move (anything alike elsewhere is a copy)."""
        self._listed.add(id(prev))

    def candidate(self, path: str, st: Stat) -> bool:
        """Hold ``path`` (new to this snapshot) as a possible move; False if it cannot be one."""
        if not st.size:
            return False
        prev = self._ids.get(st.file_id) if st.file_id and st.file_id in self._ids else None
        if prev is None and st.file_id not in self._ids:
            prev = self._sources.get(_key(st.size, st.mtime_ns, st.attrs))
            if prev is not None and prev.file_id and st.file_id:
                return False                                  # ids known on both sides, and they differ
        if prev is None or (prev.size, prev.mtime_ns, prev.attrs) != (st.size, st.mtime_ns, st.attrs):
            return False
        self.pending.append(Move(path, st, prev))
        return True

    def resolve(self) -> list[Move]:
        """Every candidate with the previous entry it carries over, or None where it must be read."""
        pending, self.pending = self.pending, []
        claimed: set[int] = set()
        out = []
        for move in pending:
            moved = id(move.prev) not in self._listed and id(move.prev) not in claimed
            claimed.add(id(move.prev))
            out.append(move if moved else move._replace(prev=None))
        return out
