"""The memory budget of one sync: every byte the sync holds for file content is counted against one budget
(``APPSVC_DR_FILESHARE__MEMORY_BUDGET``), made for the job and dropped with it.

What costs what (estimates of what the bytes cost at their peak, measured with tests/benchmarks/bench_fileshare.py):

* the pack being filled: ``pack_size``;
* a pack being uploaded: 3 × ``pack_size`` (its buffer, the encoded copy, the transport's copy: ``UPLOAD_COPIES``);
* a large file being streamed: the chunker's window (2 × the largest chunk) and the reads in flight
  (:data:`READ_WINDOW`, a decrypted SMB read and its copies);
* a batch of small files: their bytes, twice (read, and the blobs cut from them on their way to the packer).

The counter is :class:`workers.repository.budget.Budget`. The packer holds a floor of its own (one pack filling, one
uploading: :func:`~workers.repository.budget.packing_floor`) so that packing can always make progress; readers and further uploads share the rest and never wait for it while holding anything
the packer needs (the sync only hands out reads it has budget for; extra uploads only take budget that is free).
"""
from __future__ import annotations

import ctypes
import gc

MiB = 1 << 20
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # mallopt parameters (glibc malloc.h)
ARENAS = 2
READ_WINDOW = 12 * MiB                  # SMB reads of 4 MiB: the encrypted message, its plaintext, the copy handed on


def stream_cost(chunk_max: int) -> int:
    return 2 * chunk_max + READ_WINDOW


def release_memory() -> None:
    """Hand the heap memory freed by a finished job back to the system (glibc keeps freed blocks of its arenas
    otherwise, and a worker's RSS stays at its peak between jobs). Best effort: a no-op elsewhere."""
    gc.collect()                                        # cycles holding buffers of the job, if any
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def large_buffers_mapped() -> None:
    """Have glibc map every allocation of 1 MiB or more on its own (returned to the system as soon as it is
    freed) instead of raising its threshold after the first free: read windows and packs never linger in an
    arena; and keep to ``ARENAS`` arenas (one per reader thread would each keep its own freed memory).
    Process-wide and best effort (a no-op where ``mallopt`` does not exist)."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, MiB)
        libc.mallopt(M_ARENA_MAX, ARENAS)
    except (OSError, AttributeError):
        pass


def message_buffers_reused() -> None:
    """For a restore: have glibc serve buffers up to 8 MiB (2 MiB SMB WRITEs and the copies smbprotocol makes of
    them, S3 reads) from its heap and keep up to 32 MiB of freed heap, instead of mapping and unmapping (and
    page-faulting in) each one: about -40% CPU of a large-file restore after a sync (which sets a 1 MiB threshold)
    in the same process (docs/performance.md). Decoded packs (16 MiB) are still mapped on their own. :func:`release_memory` hands the heap back after the job. Process-wide and best
    effort (a no-op where ``mallopt`` does not exist)."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, 8 * MiB)
        libc.mallopt(M_TRIM_THRESHOLD, 32 * MiB)
        libc.mallopt(M_ARENA_MAX, ARENAS)
    except (OSError, AttributeError):
        pass
