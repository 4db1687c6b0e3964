"""The sync's memory budget: reads go out only while their bytes fit, extra uploads only on free budget, and the
packer's own floor (a pack filling, one uploading) always lets packing go on."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from workers.artifacts.service import ArtifactStore
from workers.fileshare.budget import stream_cost
from workers.fileshare.feed import Feed
from workers.fileshare.readers import SMALL
from workers.fileshare.settings import FileshareSettings
from workers.fileshare.tree import Stat
from workers.repository.budget import Budget
from workers.repository.packer import Packer
from workers.repository.repo import Repository
from workers.storage.local import LocalStore

MiB = 1 << 20


def test_reads_go_out_only_while_the_budget_has_room_and_resume_as_results_come_back():
    # Given a budget for two large-file streams and a feed of five large files and 40 small ones
    chunk_max = 4 * MiB
    budget, sent = Budget(2 * stream_cost(chunk_max)), []
    feed = Feed(budget, chunk_max, sent.append)
    for i in range(5):
        feed.add(i, f"big{i}", Stat(f"big{i}", False, 100 * MiB, 0, 0))
    for i in range(5, 45):
        feed.add(i, f"s{i}", Stat(f"s{i}", False, 40_000, 0, 0))
    feed.seal()
    # When the feed is pumped
    feed.pump()
    # Then only two large files are being read, and the budget is full
    assert [t.files[0].file_id for t in sent] == [0, 1] and budget.taken == budget.total
    # When one comes back, the next one goes out; when all have, the small batches follow and all is given back
    feed.done(0)
    feed.pump()
    assert [t.files[0].file_id for t in sent] == [0, 1, 2]
    for file_id in (1, 2):
        feed.done(file_id)
    while not feed.idle or feed.cost:
        feed.pump()
        for file_id in list(feed.cost):
            feed.done(file_id)
    assert feed.idle and feed.reading == 0 and budget.taken == 0
    assert sorted(f.file_id for t in sent for f in t.files) == list(range(45))
    assert budget.peak <= budget.total


def test_a_file_larger_than_the_whole_budget_is_still_read_alone():
    # Given a budget smaller than one stream / When a large file is fed / Then it goes out (alone)
    budget, sent = Budget(MiB), []
    feed = Feed(budget, 4 * MiB, sent.append)
    feed.add(1, "big", Stat("big", False, SMALL + 1, 0, 0))
    feed.add(2, "big2", Stat("big2", False, SMALL + 1, 0, 0))
    feed.pump()
    assert len(sent) == 1
    feed.done(1)
    feed.pump()
    assert len(sent) == 2


def test_extra_uploads_run_only_on_free_budget_and_the_floor_keeps_packing_going(tmp_path):
    # Given a packer allowed 3 uploads, a shared budget with no room left, and a store that holds each upload
    store = LocalStore(tmp_path / "store")
    real_put, running, most, gate = store.put, [0], [0], threading.Semaphore(0)
    lock = threading.Lock()

    def slow_put(key, stream, size=None, metadata=None, **kw):
        if "/packs/" in key and not key.endswith(".json"):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            gate.acquire(timeout=5)
            with lock:
                running[0] -= 1
        return real_put(key, stream, size, metadata, **kw)

    def six_packs(budget: Budget, pause: float) -> Packer:
        running[0] = most[0] = 0
        packer = Packer(Repository(ArtifactStore(store), "stamp1"), target=MiB, uploads=3, budget=budget)
        releaser = threading.Thread(target=lambda: [gate.release() or threading.Event().wait(pause)
                                                    for _ in range(6)])
        releaser.start()
        for _ in range(6):
            packer.add(os.urandom(32).hex(), os.urandom(MiB - 100))
        packer.finish()
        releaser.join()
        return packer

    store.put = slow_put
    budget = Budget(10 * MiB)
    assert budget.try_take(10 * MiB)                    # readers hold it all
    # When six packs' worth of blobs are added
    packer = six_packs(budget, 0.05)
    # Then every pack was stored, one upload at a time (no budget for more), and the budget is untouched
    assert packer.packs == 6 and most[0] == 1 and budget.taken == 10 * MiB
    # And with budget free, uploads run side by side and give it back
    budget.give(10 * MiB)
    packer = six_packs(budget, 0.2)
    assert packer.packs == 6 and most[0] >= 2 and budget.taken == 0


def test_a_budget_too_small_for_the_pack_size_is_refused_with_what_to_change():
    # Given 16 MiB packs / When the budget cannot hold one filling, one uploading and one read / Then refused
    with pytest.raises(ValueError, match="memory_budget must be at least .* lower pack_size"):
        FileshareSettings(pack_size=16 * MiB, memory_budget=64 * MiB)
    assert FileshareSettings().memory_budget >= FileshareSettings().pack_size * 4


RESTORE_FAULTS = """
import resource, sys
from workers.fileshare.budget import message_buffers_reused
message_buffers_reused(int(sys.argv[1]))
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):                                  # warm up: the heap grows once
    buf = bytearray(16 << 20); buf[::4096] = b"x" * len(buf[::4096]); del buf
before = faults()
for _ in range(10):                                 # ten decoded packs, one after the other
    buf = bytearray(16 << 20); buf[::4096] = b"x" * len(buf[::4096]); del buf
print(faults() - before)
"""


@pytest.mark.parametrize("largest_pack, reused", [(0, False), (16 * MiB + 4096, True)])
def test_a_restore_reuses_the_memory_of_decoded_packs_only_when_told_their_size(largest_pack, reused):
    # Given a restore's heap policy told the largest pack it holds (or not told), in a process of its own
    out = subprocess.run([sys.executable, "-c", RESTORE_FAULTS, str(largest_pack)], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    # When ten 16 MiB packs are decoded one after the other (each touching every page)
    faults = int(out.stdout.strip())
    # Then told, each reuses the last one's pages (no page faulted in again); not told, every page of each is new
    pages = 10 * (16 * MiB // 4096)
    assert (faults < pages // 20) if reused else (faults >= pages * 9 // 10), faults
