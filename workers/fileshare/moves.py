"""Files moved since the previous snapshot (a renamed file or directory), carried over without being read.

A path new to this snapshot is a move when its size, mtime and attributes are those of exactly one file of the
previous snapshot (size > 0, not stored unstable) and that file's own path is no longer listed: which is known
only once the whole tree is listed, so candidates wait for ``resolve``. Several previous files alike, or the old
path still present (a copy), or two new paths claiming one old file: the new path is read like any new file.
Memory: one small-int key per previous file (the previous manifest is in memory already).
"""
from __future__ import annotations

from workers.fileshare.manifest import Entry
from workers.fileshare.tree import Stat


def _key(size: int, mtime_ns: int, attrs: int) -> int:
    return hash((size, mtime_ns, attrs))


class Moves:
    def __init__(self, previous: dict[str, Entry]) -> None:
        self._sources: dict[int, Entry | None] = {}          # None: several alike, or still at its path
        for e in previous.values():
            if not e.is_dir and e.size and not e.unstable:
                key = _key(e.size, e.mtime_ns, e.attrs)
                self._sources[key] = None if key in self._sources else e
        self.pending: list[tuple[str, Stat, Entry]] = []

    def still_listed(self, prev: Entry) -> None:
        """``prev``'s path is in this listing: it did not move (anything alike elsewhere is a copy)."""
        key = _key(prev.size, prev.mtime_ns, prev.attrs)
        if self._sources.get(key) is prev:
            self._sources[key] = None

    def candidate(self, path: str, st: Stat) -> bool:
        """Hold ``path`` (new to this snapshot) as a possible move; False if it cannot be one."""
        prev = self._sources.get(_key(st.size, st.mtime_ns, st.attrs)) if st.size else None
        if prev is None or (prev.size, prev.mtime_ns, prev.attrs) != (st.size, st.mtime_ns, st.attrs):
            return False
        self.pending.append((path, st, prev))
        return True

    def resolve(self) -> list[tuple[str, Stat, Entry | None]]:
        """Every candidate with the previous entry it carries over, or None where it must be read."""
        pending, self.pending = self.pending, []
        claimed: set[int] = set()
        out = []
        for path, st, prev in pending:
            key = _key(prev.size, prev.mtime_ns, prev.attrs)
            moved = self._sources.get(key) is prev and id(prev) not in claimed
            claimed.add(id(prev))
            out.append((path, st, prev if moved else None))
        return out
