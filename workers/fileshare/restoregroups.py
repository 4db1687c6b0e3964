"""Large files restored pack by pack in two processes: the files are split into groups that share few packs, and
each group is restored by ``restorestream`` in a process of its own (its own interpreter lock, its own store and
SMB connections), the first group in this process.

Why: a restore of large files spends most of its CPU holding the interpreter lock (smbprotocol builds, copies and
encrypts every WRITE in Python; the store's reads and the blob joins copy too), so one process restores at about
one core's worth whatever its threads, and on a 2-core machine the second core idled (docs/performance.md).
Unlike the writer processes (``restoreprocs``), no byte crosses between the processes: each group's process
fetches, decrypts, verifies and writes its own packs, so what a second process costs is its start (~1 CPU-s) and
the packs both groups need, fetched by both (the files are split along the order the backup wrote their packs, so
only the packs where the groups meet are).

A group's process gets, through its start pipe (never disk, never logs): the store's settings (``StoreOpener``:
with the store's secrets), the private keys as DER (``KeyRing.handed``), the target's spec (with the SMB password),
its files' steps and their blobs' places. It reports the bytes written as it goes and, at its end, which files it
restored; each is renamed into place only once every blob is written and checked, as in this process. Every file
it did not restore (given up, or the process ended, failed to start or went silent for ``SILENCE`` seconds) goes
back to the file-by-file restore in this process, which fetches, writes and reports it; when the process did not
end normally, the temporary files it may have left are removed first (``partials``).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from typing import Any, Callable, NamedTuple

from workers.artifacts.service import StoreOpener
from workers.fileshare.budget import message_buffers_reused
from workers.fileshare.opener import tree_from_spec
from workers.fileshare.partials import partial_of, remove_partial
from workers.fileshare.readers import exit_with_parent
from workers.fileshare.restoreplan import Step
from workers.fileshare.restorestream import Layout, StreamedRestore, chain, pack_order
from workers.fileshare.tree import Tree
from workers.repository.index import BlobPlace
from workers.repository.repo import Repository
from workers.storage.keys import KeyRing

log = logging.getLogger("workers.fileshare.restore")
GROUPS = 2                  # processes restoring large files pack by pack: this one and GROUPS - 1 others
GROUPS_FROM = 512 << 20     # large files' bytes before another process pays for its start (~1 CPU-s, ~70 MiB)
SILENCE = 600.0             # seconds without a word from a group's process before it is stopped
PROGRESS_EVERY = 8 << 20    # bytes written between a group process's progress reports


class GroupSetup(NamedTuple):
    """What a group's process starts with (picklable; holds the store's secrets and the keys: never logged)."""
    opener: StoreOpener
    stamp: str
    keys: list[tuple[bytes, bytes | None]] | None
    tree: dict
    attributes: bool
    steps: list[Step]
    places: dict[str, BlobPlace]


def split(layouts: list[Layout], groups: int) -> list[list[Layout]]:
    """``layouts`` in ``groups`` runs of about equal bytes, cut along the order their packs were written: files
    backed up together (whose chunks share packs) stay together, so only the packs where two runs meet are
    fetched by both. Empty runs are dropped."""
    chains = [chain(layout.places) for layout in layouts]
    position = {pack: i for i, pack in enumerate(pack_order(chains))}
    spans = [(min(position[p] for p in c), max(position[p] for p in c)) for c in chains]
    total = sum(layout.step.entry.size for layout in layouts) or 1
    runs: list[list[Layout]] = [[] for _ in range(max(1, groups))]
    at = 0
    for i in sorted(range(len(layouts)), key=spans.__getitem__):
        runs[min(len(runs) - 1, at * len(runs) // total)].append(layouts[i])
        at += layouts[i].step.entry.size
    return [run for run in runs if run]


def shared_packs(runs: list[list[Layout]]) -> int:
    """How many packs more than one run needs (each fetched by each of them)."""
    seen: dict[str, int] = {}
    for i, run in enumerate(runs):
        for layout in run:
            for place in layout.places:
                seen.setdefault(place.pack, i)
                if seen[place.pack] != i:
                    seen[place.pack] = -1
    return sum(1 for i in seen.values() if i < 0)


def group_main(setup: GroupSetup, conn: Any) -> None:
    """Entry point of a group's process (spawned): restore ``setup.steps`` pack by pack; report the bytes written
    (``("progress", n)``) and at the end the targets restored (``("done", [target, ...])``), or ``("failed",
    message)`` when it could not start."""
    message_buffers_reused()
    threading.Thread(target=exit_with_parent, args=(os.getppid(),), daemon=True).start()
    sending = threading.Lock()
    pending = [0]

    def send(message: tuple) -> None:
        with sending:
            conn.send(message)

    def progress(n: int) -> None:
        with sending:
            pending[0] += n
            if pending[0] >= PROGRESS_EVERY:
                conn.send(("progress", pending[0]))
                pending[0] = 0
    try:
        tree = tree_from_spec(dict(setup.tree))
        tree.connect()
        repo = Repository(setup.opener(), setup.stamp)
        keys = KeyRing.taken(setup.keys) if setup.keys is not None else None
    except Exception as exc:  # noqa: BLE001 - its files go back to the restoring process
        send(("failed", f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"))
        return
    try:
        done, _ = StreamedRestore(repo, keys, tree.open_write, tree.set_meta, attributes=setup.attributes,
                                  progress=progress, place=setup.places.__getitem__).run(setup.steps)
        send(("progress", pending[0]))
        send(("done", [step.target for step in done]))
    finally:
        tree.close()
        repo.data.close()


class _Group:
    """A group's process, seen from the restoring process: a thread hears its reports."""

    def __init__(self, ctx: Any, setup: GroupSetup, progress: Callable[[int], None]) -> None:
        self.steps = setup.steps
        self.done: list[str] = []
        self.problem = ""
        self.conn, child = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=group_main, args=(setup, child), daemon=True, name="restore-group")
        self.process.start()
        child.close()
        self.listener = threading.Thread(target=self._listen, args=(progress,), daemon=True,
                                         name="restore-group-listener")
        self.listener.start()

    def _listen(self, progress: Callable[[int], None]) -> None:
        try:
            while True:
                if not self.conn.poll(SILENCE):
                    self.problem = f"it reported nothing for {SILENCE:.0f} s and was stopped"
                    self.process.kill()
                    return
                kind, value = self.conn.recv()
                if kind == "progress":
                    progress(int(value))
                elif kind == "done":
                    self.done = [str(target) for target in value]
                    return
                else:
                    self.problem = str(value)
                    return
        except (EOFError, OSError):
            self.problem = "its process ended before it finished"

    def finish(self, tree: Tree) -> list[Step]:
        """Wait for the group: the steps it restored. When it did not end normally, the temporary files of the
        others are removed, and they all go back to the file-by-file restore."""
        self.listener.join()
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.conn.close()
        restored = set(self.done)
        if self.problem:
            log.warning("restore: a process restoring %d large file(s) failed (%s); they are restored here",
                        len(self.steps), self.problem)
            for step in self.steps:
                remove_partial(tree, partial_of(step.target))
        done = [step for step in self.steps if step.target in restored]
        log.info("restore: a process of its own restored %d of its %d large file(s)", len(done), len(self.steps))
        return done


def restore_large(stream: StreamedRestore, steps: list[Step], tree: Tree, *, attributes: bool,
                  progress: Callable[[int], None], groups: int = GROUPS, groups_from: int = GROUPS_FROM) -> list[Step]:
    """Restore ``steps`` pack by pack (``stream``, in this process), split into ``groups`` processes when their
    bytes reach ``groups_from`` and the store and the target can be opened again in another process. The steps
    restored; the others are left to the file-by-file restore."""
    opener, spec = stream.repo.data.opener, getattr(tree, "spec", None)
    if groups < 2 or opener is None or spec is None or sum(s.entry.size for s in steps) < groups_from:
        return stream.run(steps)[0]
    layouts, _ = stream.layouts(steps)                  # the others: the file-by-file restore says what is wrong
    runs = split(layouts, groups)
    log.info("restore: %d large file(s) in %d process(es), %d pack(s) fetched by more than one",
             len(layouts), len(runs), shared_packs(runs))
    ctx = multiprocessing.get_context("spawn")
    handed = stream.keys.handed() if stream.keys is not None else None
    started: list[_Group] = []
    for run in runs[1:]:
        places = {blob: place for layout in run for blob, place in zip(layout.step.entry.blobs, layout.places)}
        setup = GroupSetup(opener, stream.repo.stamp, handed, spec(), attributes, [lay.step for lay in run], places)
        try:
            started.append(_Group(ctx, setup, progress))
        except Exception as exc:  # noqa: BLE001 - e.g. a daemonic process may not start one: restored here
            log.info("restore: no process for a group of large files (%s): restored in this one", exc)
            runs[0] += run
    done = stream.run([layout.step for layout in runs[0]])[0]
    for group in started:
        done += group.finish(tree)
    return done
