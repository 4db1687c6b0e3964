"""Will the next backup set fit? A forecast from the sizes of a stamp's newest complete sets, the retention policy
and a store's free space (``workers.storage.capacity``), worded the way the platform's sizing guidance is:
"7 sets × ~10.0 GB = 70.0 GB needed, 35.2 GB free"."""
from __future__ import annotations

from dataclasses import dataclass

from workers.artifacts.retention import set_states
from workers.storage.base import StorageBackend
from workers.storage.capacity import Space

RECENT = 3              # the newest complete sets whose sizes predict the next one
MARGIN = 1.10           # the next set is expected up to 10 % larger than the recent ones
GB = 1e9


@dataclass(frozen=True)
class Forecast:
    stamp: str
    keep_last: int
    recent_sizes: tuple[int, ...]   # stored bytes of the newest complete sets, newest first
    stamp_used: int                 # bytes under <stamp>/
    space: Space

    @property
    def next_set(self) -> int:
        """Bytes the next set is expected to take (the largest recent set, plus the margin)."""
        return int(max(self.recent_sizes, default=0) * MARGIN)

    @property
    def typical(self) -> int:
        return sum(self.recent_sizes) // len(self.recent_sizes) if self.recent_sizes else 0

    @property
    def sets_fit(self) -> int | None:
        """How many more sets fit in the free space (None: unknown)."""
        if self.space.free is None or not self.next_set:
            return None
        return self.space.free // self.next_set

    @property
    def fits_next(self) -> bool | None:
        if self.space.free is None or not self.recent_sizes:
            return None
        return self.space.free >= self.next_set

    def describe(self) -> str:
        needed = self.keep_last * self.typical
        free = "free space unknown (set quota_bytes)" if self.space.free is None else \
            f"{size_text(self.space.free)} free ({self.space.measured_by})"
        if not self.recent_sizes:
            return f"{self.stamp}: no complete set yet to size from; {free}"
        fit = "" if self.sets_fit is None else f"; about {self.sets_fit} more set(s) fit"
        return (f"{self.stamp}: {self.keep_last} sets × ~{size_text(self.typical)} = {size_text(needed)} needed, "
                f"{free}{fit}")


def size_text(value: int) -> str:
    """Bytes as the platform's sizing guidance writes them (GB; MB or KB for small stores)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value / 1e3:.1f} KB"


def forecast(backend: StorageBackend, stamp: str, keep_last: int, space: Space) -> Forecast:
    """Sizes from one listing of the stamp and its sets' states (complete ones only). What a set adds outside
    its folder (new file-share packs, a new secrets version) counts for the newest set older than the object."""
    states = sorted((s for s in set_states(backend, stamp) if not s.future and s.time), key=lambda s: s.order)
    sets = {s.set_id for s in states}
    sizes: dict[str, int] = {}
    used = 0
    for info in backend.list(f"{stamp}/"):
        used += info.size
        folder = info.key.split("/")[1]
        owner = folder if folder in sets else _owner(states, info.modified)
        if owner is not None:
            sizes[owner] = sizes.get(owner, 0) + info.size
    complete = [s for s in reversed(states) if s.complete]
    recent = tuple(sizes.get(s.set_id, 0) for s in complete[:RECENT])
    return Forecast(stamp, keep_last, recent, used, space)


def _owner(states, modified) -> str | None:
    """The newest set whose time is not after ``modified`` (states oldest first)."""
    owner = None
    for state in states:
        if state.time is not None and state.time <= modified:
            owner = state.set_id
    return owner
