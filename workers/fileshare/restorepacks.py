"""The restore's files written from decoded packs (those ``restorestream`` does not stream pack by pack): the
order their packs are needed in, so that the pack cache prefetches what every file in flight needs next, not only
the first file's, and one file's bytes read from the cache blob by blob, each proven by its id and the whole by the
snapshot's size."""
from __future__ import annotations

import heapq
from typing import Callable

from workers.fileshare.restoreplan import Step
from workers.repository.index import BlobPlace
from workers.repository.packcache import PackCache
from workers.repository.paths import shown
from workers.storage.crypto import IntegrityError


def need_order(steps: list[Step], place: Callable[[str], BlobPlace], writers: int) -> list[str]:
    """The packs of ``steps`` in the order ``writers`` files written at once will need them (each file taken by the
    first writer free, its bytes in order): the prefetch order, so that every file in flight finds its next pack
    fetched, not only the first file's."""
    free, first = [0] * max(1, writers), {}
    for step in steps:
        at = heapq.heappop(free)
        for blob in step.entry.blobs:
            where = place(blob)
            first.setdefault(where.pack, at)
            at += where.length
        heapq.heappush(free, at)
    return sorted(first, key=first.__getitem__)


def file_content(step: Step, cache: PackCache, used: list[int], out=None) -> bytes:
    """The entry's bytes (or written to ``out``), each blob checked against its id (its SHA-256, by the cache,
    just before it is used) and the whole against the snapshot's size. One hash pass: the content is the
    snapshot's blobs in the snapshot's order, each proven by its id, so hashing the whole file again (the
    manifest's SHA-256 of the same bytes) would prove nothing more; the size guards the blob list."""
    entry, parts, size = step.entry, [], 0
    for blob in entry.blobs[used[0]:]:
        data = cache.blob(blob)
        used[0] += 1
        size += len(data)
        if out is None:
            parts.append(data)
        else:
            out.write(data)
    if size != entry.size:
        raise IntegrityError(f"{shown(entry.path)} not restored: its content does not match the snapshot's "
                             "size")
    return b"".join(parts)
