"""The memory budget of one sync: every byte the sync holds for file content is counted against one budget
(``APPSVC_DR_FILESHARE__MEMORY_BUDGET``), made for the job and dropped with it.

What costs what (estimates of what the bytes cost at their peak, measured with tests/benchmarks/bench_fileshare.py):

* the pack being filled: ``pack_size``;
* a pack being uploaded: 2 × ``pack_size`` (``UPLOAD_COPIES``: its encoded copy, and the joined copy a store that
  needs one makes, or the heap the encoder's pieces leave behind; the pack's own buffer is back for the next pack
  once encoded);
* a large file being streamed: the chunker's window (2 × the largest chunk) and the reads in flight
  (:data:`READ_WINDOW`, a decrypted SMB read and its copies);
* a batch of small files: their bytes, twice (read, and the blobs cut from them on their way to the packer).

The counter is :class:`workers.repository.budget.Budget`. The packer holds a floor of its own (one pack filling, one
uploading: :func:`~workers.repository.budget.packing_floor`) so that packing can always make progress; readers and
further uploads share the rest and never wait for it while holding anything the packer needs (the sync only hands
out reads it has budget for; extra uploads only take budget that is free). When the reader processes pack and
upload themselves (``packing``), each of them holds such a floor, and the sync takes all of them out of the budget.
"""
from __future__ import annotations

import ctypes
import gc

MiB = 1 << 20
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # mallopt parameters (glibc malloc.h)
ARENAS = 2
MMAP_THRESHOLD_MAX = 32 * MiB                                # glibc's ceiling on 64-bit (HEAP_MAX_SIZE / 2)
# SMB reads of 4 MiB: the encrypted message, its plaintext, the unpacked copy and the one handed on, and the heap
# they leave behind (bench m: a third stream in flight, counted at 12 MiB, took the worker past 200 MiB)
READ_WINDOW = 20 * MiB


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


def _heap_policy(mmap_below: int, keep_free: int, arenas: int = ARENAS) -> None:
    """glibc serves allocations below ``mmap_below`` from its heap (reused: no fresh pages to fault in and zero)
    and keeps up to ``keep_free`` bytes of freed heap before trimming, in at most ``ARENAS`` arenas (one per
    thread would each keep its own freed memory). Process-wide and best effort (a no-op where ``mallopt`` does
    not exist); :func:`release_memory` hands the heap back after the job."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, mmap_below)
        libc.mallopt(M_TRIM_THRESHOLD, keep_free)
        libc.mallopt(M_ARENA_MAX, arenas)
    except (OSError, AttributeError):
        pass


def read_buffers_reused() -> None:
    """For a sync (the worker process and its reader processes): the 4 MiB SMB READ responses, the copies
    smbprotocol makes of them and its socket receive buffers (up to 4 MiB each) come from the heap, and 32 MiB of
    freed heap is kept; packs (16 MiB) are still mapped on their own. Mapping every buffer of 1 MiB or more
    (the policy before) page-faulted in and zeroed each of them: that alone was about half of a large-file
    sync's CPU (12-13 vs 6 CPU-s per GB read, bench_fileshare b; docs/performance.md). The threshold stays
    below 8 MiB and the kept heap at 32 MiB so a first sync of large files peaks below 200 MiB (bench m)."""
    _heap_policy(5 * MiB, 32 * MiB)


def packing_buffers_reused() -> None:
    """For a reader process that packs and uploads (``packing``): the same, but only 8 MiB of freed heap is kept
    (it holds one large file's reads and one pack's encoded pieces at a time; two such processes and the worker
    stay within 300 MiB together, bench m)."""
    _heap_policy(5 * MiB, 8 * MiB, arenas=1)


def message_buffers_reused(largest_pack: int = 0) -> None:
    """For a restore: have glibc serve buffers up to 8 MiB (2 MiB SMB WRITEs and the copies smbprotocol makes of
    them, S3 reads) from its heap and keep up to 32 MiB of freed heap, instead of mapping and unmapping (and
    page-faulting in) each one: about -40% CPU of a large-file restore (docs/performance.md). With
    ``largest_pack`` (the largest decoded pack this restore holds in memory), buffers up to that size come from
    the heap too, so a decoded pack reuses the memory of one already written instead of faulting in 16 MiB of
    fresh pages (-0.4 CPU-s per GB fetched, docs/performance.md); glibc allows at most 32 MiB."""
    _heap_policy(restore_mmap_threshold(largest_pack), 32 * MiB)


def restore_mmap_threshold(largest_pack: int) -> int:
    """Buffers below this size come from the heap during a restore: 8 MiB, or just above the largest pack."""
    return min(MMAP_THRESHOLD_MAX, max(8 * MiB, largest_pack + 64 * 1024))
