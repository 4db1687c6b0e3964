"""The job hand-off: deliveries queued at once, sleeping job threads woken once per I/O-loop pass."""
from __future__ import annotations

import threading
import time

from workers.runtime.handoff import Handoff


class Loop:
    """Stands in for the I/O loop: call_later(0, ...) callbacks run when the test says the pass is over."""

    def __init__(self) -> None:
        self.later: list = []

    def call_later(self, delay, callback) -> None:
        self.later.append(callback)

    def end_of_pass(self) -> None:
        callbacks, self.later = self.later, []
        for callback in callbacks:
            callback()


def test_one_wake_up_per_pass_and_items_in_order() -> None:
    loop = Loop()
    jobs = Handoff(loop, 1)
    for i in range(5):
        jobs.put(i)
    assert len(loop.later) == 1  # one wake-up scheduled for the whole pass
    loop.end_of_pass()
    assert [jobs.get() for _ in range(5)] == [0, 1, 2, 3, 4]
    jobs.close(1)
    assert jobs.get() is None


def test_idle_threads_share_the_work_one_item_at_a_time() -> None:
    loop, seen, lock = Loop(), [], threading.Lock()
    jobs = Handoff(loop, 3)
    release = threading.Event()

    def work() -> None:
        while (item := jobs.get()) is not None:
            if item == "slow":
                release.wait(10)
            with lock:
                seen.append((threading.current_thread().name, item))
    threads = [threading.Thread(target=work, name=f"job-{i}") for i in range(3)]
    for t in threads:
        t.start()
    jobs.put("slow")
    for i in range(6):
        jobs.put(i)
    loop.end_of_pass()
    deadline = time.monotonic() + 10
    while len(seen) < 6 and time.monotonic() < deadline:  # the slow job holds one thread; others do the rest
        time.sleep(0.01)
    assert sorted(item for _, item in seen) == list(range(6))
    assert len({name for name, _ in seen}) >= 1
    release.set()
    jobs.close(3)
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads) and len(seen) == 7


def test_items_put_while_a_thread_runs_need_no_wake_up() -> None:
    loop = Loop()
    jobs = Handoff(loop, 1)
    jobs.put("a")
    loop.end_of_pass()
    assert jobs.get() == "a"
    jobs.put("b")                   # the running thread comes back for more before the pass ends
    assert jobs.get() == "b"
    loop.end_of_pass()              # the spare wake-up only makes an idle thread look once more
    jobs.put("c")
    loop.end_of_pass()
    assert jobs.get() == "c"
    jobs.close(1)
    assert jobs.get() is None
