"""Restore a snapshot into a tree (a local directory or an SMB share), like ``robocopy /E``: every directory
(empty ones too), every file byte for byte with its mtime, each file's SHA-256 verified as it is written.

Resumable: a file already at the target with the same size, mtime and SHA-256 is left alone. A file is written
to a temporary name beside it and renamed over it only once its size and hashes are verified, so a failed or
interrupted restore never damages a file already there, and a half-written file never looks done.

Safe against a forged snapshot: the selected entries are checked before anything is written (``paths``: no
entry can leave the target), the target walks every path without following symlinks / reparse points, and a
reparse point where a file goes is refused (:class:`~workers.repository.paths.UnsafeTargetError`). The large files are
restored pack by pack (``restorestream``: each pack streamed once, each blob written where it goes); the other files
from packs decoded once each, in memory or in a private temporary directory, and dropped as soon as no file still
needs them (``packcache``, ``restorepacks``).

A run first plans (``restoreplan``: every conflict with what the target holds is known before anything is written),
then creates the directories, writes the files (many at once; a small file over SMB in one compound request),
sets files' mtimes and DOS attributes after their content and directories' last, and finally lists the target
again to verify what it claims. With ``writers`` (off by default), an SMB target's large files are written by writer
processes (``restoreprocs``) with the bytes this process fetched and verified. A problem with one file (locked,
denied, a conflict, a damaged blob) is retried where it may pass, then listed with its reason and how to fix it; the
others are restored regardless.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from workers.fileshare.budget import message_buffers_reused, release_memory
from workers.fileshare.restorecheck import already_there, listed_again
from workers.fileshare.restorepacks import file_content, need_order
from workers.fileshare.restoreplan import (READONLY_IN_THE_WAY, Plan, Planner, Step, aside_name,
                                           readonly_in_the_way)
from workers.fileshare.restoreprocs import WriterPool
from workers.fileshare.restorereport import HINTS, Failure, RestoreReport
from workers.fileshare.restorestream import StreamedRestore
from workers.fileshare.tree import ATTRIBUTES, FileProblem, Tree
from workers.repository.manifest import Entry, Manifest, check_entries
from workers.repository.packcache import FETCHERS, PackCache
from workers.repository.paths import shown
from workers.repository.repo import Repository
from workers.runtime.errors import PermanentError
from workers.storage.base import ObjectNotFound
from workers.storage.codec import KeyRing
from workers.storage.crypto import IntegrityError

log = logging.getLogger(__name__)
SMALL = 4 * 1024 * 1024          # a file up to this size is written in one call (one compound request over SMB)
LARGE_IN_FLIGHT = 3              # larger files written at once (each holds a write buffer and its message copies)
# SMB target: processes writing the large files (``restoreprocs``), one file each, when the large files hold at least
# WRITERS_FROM bytes (a process costs ~1 CPU-s to start). Off unless asked for (``writers``): on 2 cores shared with
# smbd and moto they made restores slower (the bytes cross a socket, each process starts and logs in: +3 CPU-s/GB),
# and 2 of them took the process tree to 355 MiB, over the 300 MiB limit (docs/performance.md, 2026-12-03 evening).
WRITERS = 0
WRITERS_FROM = 256 << 20


def select(manifest: Manifest, path: str | None) -> list[Entry]:
    if not path:
        return list(manifest.entries)
    path = path.strip("/")
    return [e for e in manifest.entries if e.path == path or e.path.startswith(path + "/")]


class Restorer:
    def __init__(self, repo: Repository, target: Tree, *, keys: KeyRing | None = None, transfers: int = 8,
                 progress: Callable[[int], None] = lambda nbytes: None, overwrite: bool = False,
                 attributes: bool = True, retries: int = 3, wait: float = 5.0, temp_root: Path | None = None,
                 writers: int = WRITERS, writers_from: int = WRITERS_FROM, streamed: bool = True) -> None:
        self.repo, self.target, self.keys, self.transfers, self.progress = repo, target, keys, transfers, progress
        self.overwrite, self.attributes, self.retries, self.wait = overwrite, attributes, retries, wait
        self.temp_root, self.writers, self.writers_from = temp_root, writers, writers_from
        self.streamed = streamed                                 # large files pack by pack (``restorestream``)
        self._large = threading.Semaphore(LARGE_IN_FLIGHT)      # set again per run (fewer with writer processes)
        self._open_write: Callable = target.open_write           # or a writer process's (``restoreprocs``)

    def _entries(self, manifest: Manifest, path: str | None) -> list[Entry]:
        entries = select(manifest, path)
        if path and not entries:
            raise PermanentError(f"{path!r} is not in snapshot {manifest.snapshot_id}",
                                 hint="List the snapshot's paths with `appsvc-dr snapshots diff` or drop --path.")
        check_entries(entries, where=f"snapshot {shown(manifest.snapshot_id, 80)}: ")   # before any byte is written
        return entries

    def plan(self, manifest: Manifest, path: str | None = None) -> Plan:
        """What a restore would do (nothing is written; a missing target counts as empty)."""
        entries = self._entries(manifest, path)
        exists = self.target.exists()
        if exists:
            self.target.connect()
        return Planner(self.target, overwrite=self.overwrite).plan(entries, exists=exists)

    def run(self, manifest: Manifest, path: str | None = None) -> RestoreReport:
        entries = self._entries(manifest, path)
        self.target.connect()
        self.repo.load_index()
        missing = {b for e in entries if not e.is_dir for b in e.blobs if b not in self.repo.index}
        if missing:
            raise PermanentError(f"snapshot {manifest.snapshot_id} needs {len(missing)} blob(s) that no index "
                                 "lists", hint="The repository is damaged (packs or index objects deleted): "
                                               "restore another snapshot.")
        writers = self._writer_pool(entries)            # started now: they connect while the plan is made
        try:
            plan = Planner(self.target, overwrite=self.overwrite).plan(entries)
            report = RestoreReport(plan=plan)
            for step in plan.steps:
                if step.action == "unresolved":
                    report.failed.append(Failure(step.entry.path, step.reason, step.hint))
                elif step.resolve == "rename":
                    report.renamed.append(Failure(step.entry.path, step.reason, step.hint))
            self._directories(plan, report)
            files = [s for s in plan.steps if not s.entry.is_dir and s.action != "unresolved"]
            message_buffers_reused()
            try:
                done = self._files(files, report, writers)
            finally:
                release_memory()
        finally:
            if writers is not None:
                writers.close()
        self._finish(plan, report, done)
        return report

    def _writer_pool(self, entries: list[Entry]) -> WriterPool | None:
        """Writer processes for the large files, when the target is an SMB share and they are worth starting."""
        spec = getattr(self.target, "spec", None)
        if self.writers < 1 or spec is None or spec().get("kind") != "smb" or \
                sum(e.size for e in entries if not e.is_dir and e.size > SMALL) < self.writers_from:
            return None
        return WriterPool(self.target, self.writers)

    # ------------------------------------------------------------------------------------ directories
    def _directories(self, plan: Plan, report: RestoreReport) -> None:
        dirs = [s for s in plan.steps if s.entry.is_dir and s.action != "unresolved"]
        for step in dirs:
            if step.resolve in ("aside", "remove"):
                self._guarded(step, report, lambda s=step: self._clear(s))
        parents = {s.target.rpartition("/")[0] for s in plan.steps
                   if not s.entry.is_dir and s.action != "unresolved"} - {""}
        wanted = sorted({s.target for s in dirs if s.action == "create" and s.target not in self._failed(report)} |
                        {p for p in parents if not any(f.path == p for f in report.failed)})
        by_depth: dict[int, list[str]] = {}
        for rel in wanted:
            by_depth.setdefault(rel.count("/"), []).append(rel)
        with ThreadPoolExecutor(self.transfers) as pool:         # a level at a time: parents before children
            for depth in sorted(by_depth):
                for rel, problem in zip(by_depth[depth], pool.map(self._makedir, by_depth[depth]), strict=True):
                    if problem is not None:
                        report.failed.append(Failure(rel, problem.message, HINTS.get(problem.kind, "")))
        report.dirs = len(dirs)

    def _makedir(self, rel: str) -> FileProblem | None:
        try:
            self.target.makedirs(rel)
        except FileProblem as exc:
            return exc
        return None

    @staticmethod
    def _failed(report: RestoreReport) -> set[str]:
        return {f.path for f in report.failed}

    def _clear(self, step: Step) -> None:
        """Move aside (or remove, with --overwrite) what is where ``step`` goes; never follows a link."""
        if readonly_in_the_way(step) and not step.existing.is_dir:
            self.target.set_meta(step.target, None, 0)          # a read-only file cannot be removed or renamed
        if step.resolve == "remove":
            self.target.remove(step.target)
            return
        name = step.target.rpartition("/")[2]
        self.target.rename(step.target, aside_name(name))

    def _guarded(self, step: Step, report: RestoreReport, action: Callable[[], object], record: bool = True) -> bool:
        """Run ``action`` for ``step``, retrying a locked path; a FileProblem left over is listed. Whether it ran."""
        for attempt in range(self.retries + 1):
            try:
                action()
                if record and step.reason and step.resolve != "rename":
                    report.resolved.append(Failure(step.entry.path, step.reason, ""))
                return True
            except FileProblem as exc:
                if exc.kind == "locked" and attempt < self.retries:
                    time.sleep(self.wait)
                    continue
                reason = exc.message.removeprefix(f"{step.target}: ")         # the path is listed beside it
                report.failed.append(Failure(step.entry.path, reason, HINTS.get(exc.kind, "")))
                return False
            except (IntegrityError, ObjectNotFound) as exc:
                message = getattr(exc, "message", str(exc))
                report.failed.append(Failure(step.entry.path, message, HINTS["integrity"]))
                return False
        return False

    # ------------------------------------------------------------------------------------------ files
    def _files(self, steps: list[Step], report: RestoreReport, writers: WriterPool | None) -> list[Step]:
        blocked = self._failed(report)
        for step in [s for s in steps if s.target.rpartition("/")[0] in blocked]:
            report.failed.append(Failure(step.entry.path, "its directory could not be created",
                                         "See that directory's problem above, fix it and restore again."))
        steps = [s for s in steps if s.target.rpartition("/")[0] not in blocked]
        with ThreadPoolExecutor(self.transfers) as pool:
            same = list(pool.map(self._identical, steps))
        todo = [s for s, identical in zip(steps, same, strict=True) if not identical]
        report.files_identical = len(steps) - len(todo)
        written: list[Step] = [s for s, identical in zip(steps, same, strict=True) if identical]
        if writers is None and self.streamed:
            todo = self._streamed(todo, report, written)
        refs = Counter(self.repo.index.place(b).pack for s in todo for b in s.entry.blobs)
        order = {p: i for i, p in enumerate(sorted(refs))}
        todo.sort(key=lambda s: min((order[self.repo.index.place(b).pack] for b in s.entry.blobs), default=-1))
        large = LARGE_IN_FLIGHT if writers is None else writers.count
        self._large = threading.Semaphore(large)
        self._open_write = self.target.open_write if writers is None else writers.open_write
        packs = need_order(todo, self.repo.index.place, large)
        cache = PackCache(self.repo, self.keys, refs, temp_root=self.temp_root, ahead=large + FETCHERS)
        message_buffers_reused(cache.largest_in_memory)
        try:
            cache.prefetch(packs)
            with ThreadPoolExecutor(self.transfers) as pool:
                for step, size in zip(todo, pool.map(lambda s: self._write_one(s, cache, report), todo), strict=True):
                    if size is not None:
                        report.bytes_written += size
                        report.files_restored += 1
                        written.append(step)
        finally:
            cache.close()
        return written

    def _streamed(self, todo: list[Step], report: RestoreReport, written: list[Step]) -> list[Step]:
        """Restore the large files with nothing to resolve first pack by pack (``restorestream``), and the small
        ones whose blobs are all in the packs streamed for them; what is left."""
        plain = [s for s in todo if not s.resolve and not readonly_in_the_way(s)]
        large = [s for s in plain if s.entry.size > SMALL]
        if not large:
            return todo
        done, _ = StreamedRestore(self.repo, self.keys, self.target.open_write, self.target.set_meta,
                                  attributes=self.attributes, progress=self.progress,
                                  write_file=self.target.write_file).run(large, [s for s in plain
                                                                                if s.entry.size <= SMALL])
        for step in done:
            report.bytes_written += step.entry.size
            report.files_restored += 1
            written.append(step)
        finished = {id(s) for s in done}
        return [s for s in todo if id(s) not in finished]

    def _identical(self, step: Step) -> bool:
        same = already_there(self.target, step, lambda blob: self.repo.index.place(blob).length)
        if same:
            self.progress(step.entry.size)
        return same

    def _write_one(self, step: Step, cache: PackCache, report: RestoreReport) -> int | None:
        entry, used = step.entry, [0]
        attrs = entry.attrs & ATTRIBUTES if self.attributes else None

        def write() -> None:
            if readonly_in_the_way(step) and not self.overwrite:
                raise FileProblem("readonly", f"{READONLY_IN_THE_WAY} (its content differs)")
            if step.resolve == "aside":
                self._clear(step)
                step.resolve = "aside-done"
            elif step.resolve == "clear-readonly":
                self.target.set_meta(step.target, None, 0)
            if entry.size <= SMALL:
                data = file_content(step, cache, used)
                self.target.write_file(step.target, data, entry.mtime_ns, attrs)
            else:
                with self._large, self._open_write(step.target) as fh:   # a temporary file, renamed on success
                    file_content(step, cache, used, fh)
                self.target.set_meta(step.target, entry.mtime_ns, attrs)

        ok = self._guarded(step, report, write)
        cache.release(entry.blobs[used[0]:])
        if not ok:
            return None
        self.progress(entry.size)
        return entry.size

    # ----------------------------------------------------------------------------------- last steps
    def _finish(self, plan: Plan, report: RestoreReport, files: list[Step]) -> None:
        """Identical files' attributes, then directories' mtimes and attributes deepest first, then verification."""
        failed = self._failed(report)
        for step in files:
            if step.action == "check" and step.existing is not None and self.attributes and \
                    (step.existing.attrs & ATTRIBUTES) != (step.entry.attrs & ATTRIBUTES):
                self._guarded(step, report, lambda s=step: self.target.set_meta(s.target, s.entry.mtime_ns,
                                                                              s.entry.attrs & ATTRIBUTES), False)
        dirs = [s for s in plan.steps if s.entry.is_dir and s.target not in failed and s.action != "unresolved"]
        for step in sorted(dirs, key=lambda s: s.target.count("/"), reverse=True):
            attrs = step.entry.attrs & ATTRIBUTES if self.attributes else None
            self._guarded(step, report, lambda s=step, a=attrs: self.target.set_meta(s.target, s.entry.mtime_ns, a,
                                                                                     is_dir=True), False)
        self._verify([*dirs, *files], report)

    def _verify(self, steps: list[Step], report: RestoreReport) -> None:
        report.failed += listed_again(self.target, steps, self._failed(report),
                                      self.attributes and self.target.keeps_attributes)
