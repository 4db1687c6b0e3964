"""A byte budget shared by the parts of one job that hold content in memory, the sizes of packs, and what
packing costs in the budget (this module imports nothing of ours: settings use it).

The packer holds a floor of its own (one pack filling, one uploading: :func:`packing_floor`) so that packing can
always make progress; readers and further uploads share the rest of the budget (see
``workers.fileshare.budget`` for what the sync's readers cost).
"""
from __future__ import annotations

import threading

# a pack being uploaded: its encoded copy (the encoder's pieces, sent as they are), and the joined copy a store that
# needs one makes, or else the heap those pieces leave behind (bench m)
UPLOAD_COPIES = 2
DEFAULT_PACK_SIZE = 16 << 20    # the largest pack object (APPSVC_DR_FILESHARE__PACK_SIZE): one S3 part by default
PACK_MARGIN = 64 * 1024         # room for the artifact format's headers, so an encoded pack fits one S3 part


def packing_floor(pack_size: int) -> int:
    """The pack being filled and one being uploaded."""
    return pack_size + UPLOAD_COPIES * pack_size


class Budget:
    """A byte count handed out without blocking: ``try_take`` succeeds while what is taken stays within the
    total (or when nothing is taken at all, so one task larger than the budget can still run alone)."""

    def __init__(self, total: int) -> None:
        self.total, self.taken, self.peak = total, 0, 0
        self._lock = threading.Lock()

    def try_take(self, n: int) -> bool:
        with self._lock:
            if self.taken and self.taken + n > self.total:
                return False
            self.taken += n
            self.peak = max(self.peak, self.taken)
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self.taken -= n
