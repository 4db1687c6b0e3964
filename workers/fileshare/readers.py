"""Readers: list directories and read, chunk and hash files, in threads of this process (local trees) or in
``spawn``-started processes with threads each (SMB trees: smbprotocol is CPU-bound per process and its
connection cache is not fork-safe, so every process registers its own session).

Tasks and results are the named records of ``messages``.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
import time
from typing import Any, Callable, NamedTuple

from workers.fileshare.budget import packing_buffers_reused, read_buffers_reused
from workers.fileshare.chunker import Chunker
from workers.fileshare.messages import ListDir, Result, Task
from workers.fileshare.opener import tree_from_spec
from workers.fileshare.packing import PackingSpec, process_packer
from workers.fileshare.reader import SMALL, KnownIds, Reader, fatal, serve
from workers.fileshare.tree import Tree
from workers.runtime.errors import TransientError

log = logging.getLogger("appsvc_dr.fileshare")
CLOSE_PACKING = 600.0                   # seconds for packing processes to store their last packs


class ProcessSetup(NamedTuple):
    """What a reader process is started with (picklable: it crosses to a ``spawn``-started process)."""
    tree: dict                      # the tree's spec (holds the password: never logged)
    chunk_avg: int
    chunk_kind: str
    known: bytes                    # KnownIds' raw form
    reread: int
    threads: int
    packing: PackingSpec | None     # pack and upload here (see ``packing``); None: new blobs go to the sync


def process_main(setup: ProcessSetup, proc: int, tasks: Any, large: Any, results: Any, answers: Any) -> None:
    """Entry point of reader process ``proc`` (spawned): its own session, ``setup.threads`` reader threads, and
    with ``setup.packing`` its own packer and store client, and one more thread for large files (``large``: one
    large file at a time per process, so each holds one read window; whichever process is free takes the next)."""
    packing_buffers_reused() if setup.packing else read_buffers_reused()
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    ids = KnownIds(setup.known)
    try:
        tree = tree_from_spec(dict(setup.tree))
        tree.connect()
        packer = process_packer(setup.packing, proc, ids, results, answers) if setup.packing else None
    except BaseException as exc:  # noqa: BLE001
        results.put(fatal(exc))
        return
    chunker, reread, threads = Chunker(setup.chunk_avg, kind=setup.chunk_kind), setup.reread, setup.threads
    lock = threading.Lock()

    class _Known:
        def __contains__(self, blob: str) -> bool:
            return blob in ids

        def add(self, blob: str) -> None:
            with lock:
                ids.add(blob)

    store = packer.add if packer is not None else None
    workers = [threading.Thread(target=serve, args=(Reader(tree, chunker, _Known(), results.put, reread, store),
                                                    source, results), daemon=True)
               for source in [tasks] * threads + ([large] if packer is not None else [])]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    try:
        if packer is not None:
            packer.finish()                             # the last pack; every upload reported (PackStored)
    except BaseException as exc:  # noqa: BLE001 - reported to the sync, which stops everything
        results.put(fatal(exc))
    finally:
        tree.close()
        if packer is not None:
            packer.repo.data.close()


def _exit_with_parent(parent: int) -> None:
    """A reader process whose sync is gone (killed outright) stops at once instead of reading on for nobody."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


class ReaderPool:
    """Reader threads in this process (they list directories, and read every file when ``processes`` is 0), plus
    ``processes`` reader processes × threads, started on the first read for them (a sync with nothing to read
    starts none). Without ``packing`` the processes read small files only (large ones are read by the threads
    here, straight into the packer) and send their new blobs over; with it they read every file and pack and
    upload it themselves (``packing``). A bridge thread moves the processes' results into the one result queue."""

    def __init__(self, tree: Tree, chunker: Chunker, *, store: Callable[[str, memoryview], object], reread: int,
                 threads: int, processes: int = 0, known_ids: Callable[[], bytes] = lambda: b"",
                 packing: PackingSpec | None = None) -> None:
        self.tree, self.chunker, self.reread, self.known_ids = tree, chunker, reread, known_ids
        self.packing = packing if processes else None
        self.results: queue.Queue = queue.Queue(maxsize=max(16, 4 * threads))
        self.tasks: queue.Queue = queue.Queue()
        self.wanted, self.per = processes, max(1, -(-threads // processes)) if processes else 0
        self.count = self.per * processes if processes else threads
        self.processes: list[Any] = []
        self.answers: list[Any] = []
        self._ptasks: Any = None
        self._plarge: Any = None                        # large files, for packing processes
        self._stop = threading.Event()
        self._starting: threading.Thread | None = None
        self._started = threading.Event()
        self.threads = [threading.Thread(target=serve, args=(Reader(tree, chunker, None, self.results.put, reread,
                                                                    store), self.tasks, self.results), daemon=True)
                        for _ in range(min(threads, 4) if processes else threads)]
        for t in self.threads:
            t.start()

    def submit(self, task: Task) -> None:
        """Directories go to the threads here, and so do large files unless the processes pack (a large file
        costs few requests, and its bytes need not cross a pipe); batches of small files to the processes."""
        large = type(task) is not ListDir and any(f.listed.size > SMALL for f in task.files)
        if type(task) is ListDir or not self.wanted or (large and not self.packing):
            self.tasks.put(task)
            return
        if self._starting is None:
            ctx = multiprocessing.get_context("spawn")
            self._ptasks, self._plarge = ctx.Queue(), ctx.Queue()
            presults = ctx.Queue(maxsize=max(16, 4 * self.count))
            self.answers = [ctx.Queue() for _ in range(self.wanted)]
            self._starting = threading.Thread(target=self._start, args=(ctx, presults), daemon=True)
            self._starting.start()
        (self._plarge if large else self._ptasks).put(task)

    def answer(self, proc: int, refused: list[str]) -> None:
        """Answer reader process ``proc``'s claim (see ``packing``)."""
        self.answers[proc].put(refused)

    def _start(self, ctx: Any, presults: Any) -> None:
        try:
            setup = ProcessSetup(self.tree.spec(), self.chunker.avg, self.chunker.kind, self.known_ids(), self.reread,
                                 self.per, self.packing)
            for proc in range(self.wanted):
                p = ctx.Process(target=process_main, args=(setup, proc, self._ptasks, self._plarge, presults,
                                                          self.answers[proc]), daemon=True)
                p.start()
                self.processes.append(p)
        except BaseException as exc:  # noqa: BLE001
            self.results.put(fatal(exc))
        finally:
            self._started.set()
        running = True
        while running:
            running = not self._stop.is_set() or any(p.is_alive() for p in self.processes)
            try:                                        # once they all ended: what they sent before, then stop
                message = presults.get(timeout=0.1)
            except queue.Empty:
                continue
            running = True
            self.results.put(message)                   # close() reads until this thread ends
        presults.cancel_join_thread()

    def get(self, timeout: float) -> Result | None:
        try:
            return self.results.get(timeout=timeout)
        except queue.Empty:
            return None

    def dead(self) -> bool:
        return any(p.exitcode not in (None, 0) for p in self.processes)

    def close(self, *, abort: bool = False, on_message: Callable[[Result], None] | None = None) -> None:
        """Stop the readers. ``abort``: drop queued tasks and do not wait for processes to finish theirs. What the
        readers still say meanwhile (a packing process's last claims and stored packs) goes to ``on_message``;
        unless aborting, a reader process that dies meanwhile raises TransientError."""
        if abort:
            for p in self.processes:
                p.terminate()
            while True:
                try:
                    self.tasks.get_nowait()
                except queue.Empty:
                    break
        for _ in self.threads:
            self.tasks.put(None)
        if self._starting is not None:
            self._started.wait(timeout=60)              # every process started
            for _ in range(self.count):
                self._ptasks.put(None)
            for _ in range(self.wanted if self.packing else 0):
                self._plarge.put(None)
        self._stop.set()
        deadline = time.monotonic() + (CLOSE_PACKING if self.packing and not abort else 30)
        try:
            while time.monotonic() < deadline and (any(t.is_alive() for t in self.threads) or
                                                   any(p.is_alive() for p in self.processes) or
                                                   (self._starting is not None and self._starting.is_alive())):
                message = self.get(timeout=0.05)        # readers blocked on a full result queue move on
                if message is not None and on_message is not None:
                    on_message(message)
                if not abort and self.dead():
                    raise TransientError("a reader process died; the job is retried")
            while on_message is not None and (message := self.get(timeout=0)) is not None:
                on_message(message)
        finally:
            for p in self.processes:
                if p.is_alive():
                    p.terminate()
                p.join(timeout=5)
            for tasks in (self._ptasks, self._plarge):
                if tasks is not None:
                    tasks.cancel_join_thread()
