"""What the pack-by-pack restore (``restorestream``) writes and reads with: a positional write into a file
``open_write`` gave (SMB's own pipelined ``write_at``, else ``os.pwrite``), a pack's plaintext read in the pieces it
was decoded in, and a byte budget that waits for room (the riders' bytes read and not yet written)."""
from __future__ import annotations

import os
import threading
from typing import Any, Callable


class Room:
    """Bytes that may wait at once; ``take`` waits for room (always room for one, however large)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used, self.cond = limit, 0, threading.Condition()

    def take(self, n: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: not self.used or self.used + n <= self.limit)
            self.used += n

    def give(self, n: int) -> None:
        with self.cond:
            self.used -= n
            self.cond.notify_all()


def pieces_of(plain: Any, size: int) -> list[bytes]:
    """``size`` bytes of a pack's plaintext in the pieces they were decoded in (fewer bytes only at its end); a
    piece that is part of a decoded segment is a view of it, not a copy (hashed and written as it is)."""
    read_pieces = getattr(plain, "read_pieces", None)
    return read_pieces(size, views=True) if read_pieces is not None else [plain.read(size)]


def positional(fh: Any) -> Callable[[int, Any], object]:
    """``write_at(offset, data)`` of a file object ``open_write`` gave: its own (SMB), else ``os.pwrite``."""
    own = getattr(fh, "write_at", None)
    if own is not None:
        return own
    fd = fh.fileno()

    def write_at(offset: int, data: Any) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
    return write_at
