"""The order a pack-by-pack restore (``restorestream``) takes packs in, and which large files it restores: each
file is open from its first pack to its last, so at most so many may overlap."""
from __future__ import annotations

import heapq
from collections import Counter, defaultdict


def pack_order(chains: list[list[str]]) -> list[str]:
    """Every pack of ``chains`` (each file's packs in the order its blobs need them) once, each chain's packs in its
    order where the chains agree (a topological merge; where they disagree, the earliest pack waiting goes first).
    For files that were backed up together this is the order the packs were written."""
    after: dict[str, set[str]] = defaultdict(set)
    waiting: Counter = Counter()
    first: dict[str, tuple[int, int]] = {}
    for i, chain in enumerate(chains):
        for j, pack in enumerate(chain):
            first.setdefault(pack, (i, j))
            waiting[pack] += 0
        for a, b in zip(chain, chain[1:]):
            if b not in after[a]:
                after[a].add(b)
                waiting[b] += 1
    ready = [(first[p], p) for p in first if not waiting[p]]
    heapq.heapify(ready)
    left, order = set(first), []
    while left:
        if not ready:                           # the chains disagree (a cycle): the earliest pack left goes next
            pack = min(left, key=first.__getitem__)
            heapq.heappush(ready, (first[pack], pack))
        _, pack = heapq.heappop(ready)
        if pack not in left:
            continue
        left.remove(pack)
        order.append(pack)
        for nxt in after[pack]:
            waiting[nxt] -= 1
            if not waiting[nxt] and nxt in left:
                heapq.heappush(ready, (first[nxt], nxt))
    return order


def admitted(spans: list[tuple[int, int]], max_open: int) -> list[bool]:
    """Which files (each open from the position of its first pack to that of its last, ``spans``) can be restored
    with at most ``max_open`` open at once, taken in the order they open."""
    ends: list[int] = []
    ok = [False] * len(spans)
    for i in sorted(range(len(spans)), key=spans.__getitem__):
        lo, hi = spans[i]
        while ends and ends[0] < lo:
            heapq.heappop(ends)
        if len(ends) < max_open:
            heapq.heappush(ends, hi)
            ok[i] = True
    return ok
