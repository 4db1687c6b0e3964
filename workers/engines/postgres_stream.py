"""Restoring a PostgreSQL database that does not exist yet while its dump is still arriving.

The plaintext stream (fetched, decrypted, decompressed and hashed as it goes) is piped into ``pg_restore``,
which restores it into a scratch database on the same server, and into ``pg_restore --list``, which reads the
archive's table of contents. No client sees restored data before it is proven. The scratch database is renamed
to the target only when all of these hold:

- the stream was read to its end and its signed SHA-256 matched (the source's block exited cleanly);
- pg_restore succeeded;
- the archive names the expected database;
- every table the archive holds is there.

Any failure drops the scratch database. Its name is derived from the target (``appsvc_dr_restoring_<hash>``),
so a run killed before the rename leaves one database behind, which the next restore of the same target drops
first.

An existing target is not restored this way: replacing it in place (pg_restore ``--clean`` from a verified
staged copy, :meth:`PostgresEngine.restore`) keeps its owner, grants and settings. An archive that pg_restore
cannot read from a pipe (out-of-order data) raises :class:`NeedsSeekableArchive`, and the caller falls back to
the staged copy.
"""
from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import logging
import subprocess
import threading
import time
from typing import IO, Callable, ContextManager, BinaryIO

from workers.engines.base import Progress, ProgressReporter, RestoreOptions, RestoreResult
from workers.engines.postgres_errors import missing_tool
from workers.engines.postgres_text import conninfo_value, parse_listing
from workers.runtime.errors import PermanentError
from workers.storage.readahead import WriteBehind

log = logging.getLogger(__name__)

SCRATCH_PREFIX = "appsvc_dr_restoring_"
CHUNK = 1 << 20
LIST_PREFIX = 64 << 20                # the most of the archive its table of contents may take to stream
PIPE_BYTES = 1 << 20                  # pg_restore keeps reading while the next chunk decodes (Linux default: 64 KiB)
_OUT_OF_ORDER = "out-of-order restore request"


class NeedsSeekableArchive(PermanentError):
    """pg_restore needs to seek in this archive: restore it from a staged copy instead."""


def scratch_for(target: str) -> str:
    """The scratch database a streamed restore of ``target`` goes into before the rename (≤ 63 bytes)."""
    return SCRATCH_PREFIX + hashlib.sha256(target.encode()).hexdigest()[:24]


def restore_streamed(engine, database: str, open_source: Callable[[], ContextManager[BinaryIO]], *, total: int,
                     options: RestoreOptions | None = None, progress: Progress | None = None) -> RestoreResult:
    """Restore the archive ``open_source()`` yields into the new database ``database`` of ``engine`` (a
    :class:`~workers.engines.postgres.PostgresEngine`), as the module says. ``total`` is the plaintext size, for
    ``progress`` percentages."""
    started, reporter = time.monotonic(), ProgressReporter(progress)
    scratch = scratch_for(database)
    engine.drop(scratch)                                   # a leftover of a run killed before its rename
    engine.create(scratch)
    try:
        listing = _pipe(engine, scratch, open_source, total, reporter)
        entries, held = parse_listing(listing)
        engine.check_archive(database, held, options or RestoreOptions())
        expected = sum(1 for kind in entries if kind == "TABLE")
        tables, rows = engine.count_rows(scratch)          # the result's counts: a rename changes no row
        if len(tables) < expected:
            raise PermanentError(f"restore into {database!r} left {len(tables)} tables, the archive has {expected}",
                                 hint="The restore is incomplete: see the pg_restore log.")
        engine.rename(scratch, database)
    except BaseException:
        with contextlib.suppress(Exception):
            engine.drop(scratch)
        raise
    reporter.done()
    return RestoreResult(database, "(streamed)", time.monotonic() - started, engine.name, engine.server,
                         tables=len(tables), rows=sum(rows.values()))


class _Tee:
    """Writes to pg_restore, and the first ``LIST_PREFIX`` bytes to the lister: the table of contents is at the
    start of the archive, and pg_restore --list ends well at the end of its input once it has read it. ``cut``:
    the lister saw less than the whole archive."""

    def __init__(self, restore: IO[bytes], lister: IO[bytes]) -> None:
        self.restore, self.lister, self.listed, self.cut = restore, lister, 0, False

    def write(self, data: bytes) -> int:
        part = data[:LIST_PREFIX - self.listed] if self.listed < LIST_PREFIX else b""
        self.listed += len(part)
        self.cut = self.cut or len(part) < len(data)
        if self.lister is not None and part:
            try:
                self.lister.write(part)
            except BrokenPipeError:                     # it stopped reading: its exit status says why
                self.lister = None
        if self.lister is not None and self.listed >= LIST_PREFIX:
            with contextlib.suppress(OSError):
                self.lister.close()
            self.lister = None
        self.restore.write(data)
        return len(data)


def _pipe(engine, scratch: str, open_source, total: int, reporter: ProgressReporter) -> str:
    """Feed the archive to pg_restore (into ``scratch``) and pg_restore --list; the listing's text."""
    tool, env = engine.settings.pg_restore, engine.tool_env(None)
    argv = [tool, "--no-owner", "--exit-on-error", "--verbose", f"--dbname=dbname={conninfo_value(scratch)}"]
    procs: list[subprocess.Popen] = []
    try:
        for command, out in ((argv, subprocess.DEVNULL), ([tool, "--list"], subprocess.PIPE)):
            procs.append(subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=out,
                                          stderr=subprocess.PIPE))
    except OSError:
        _stop(procs)
        raise missing_tool("pg_restore", "APPSVC_DR_DATABASE__PG_RESTORE") from None
    restore, lister = procs
    with contextlib.suppress(OSError):
        fcntl.fcntl(restore.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)      # type: ignore[union-attr]
    tail: collections.deque[str] = collections.deque(maxlen=40)
    output: dict[str, bytes] = {}
    readers = [threading.Thread(target=_lines, args=(restore.stderr, tail), daemon=True)] + [
        threading.Thread(target=_slurp, args=(output, name, stream), daemon=True)
        for name, stream in (("list", lister.stdout), ("list errors", lister.stderr))]
    for thread in readers:
        thread.start()
    tee = _Tee(restore.stdin, lister.stdin)                                 # type: ignore[arg-type]
    sink, done = WriteBehind(tee), 0
    try:
        with open_source() as plain:                    # leaving it cleanly = every hash checked
            while data := plain.read(CHUNK):
                sink.write(data)
                done += len(data)
                if total:
                    reporter(min(99, done * 100 // total))
            sink.finish()
    except BrokenPipeError:                             # pg_restore stopped reading: its own error says why
        sink.abort()
        _close(procs, readers)
        _raise_failure(engine, restore, tail)
        raise
    except BaseException:
        _stop(procs)
        sink.abort()
        _close(procs, readers)
        raise
    _close(procs, readers)
    _raise_failure(engine, restore, tail)
    if lister.returncode != 0 and tee.cut:
        raise NeedsSeekableArchive(f"the archive's table of contents is larger than the {LIST_PREFIX:,} bytes "
                                   "read for it while streaming", hint="It is restored from a staged copy instead.")
    if lister.returncode != 0 or not output.get("list"):
        detail = output.get("list errors", b"").decode(errors="replace").strip()[-500:]
        raise PermanentError(f"the archive is not a readable pg_dump archive: {detail or 'pg_restore --list failed'}",
                             hint="The dump is damaged, truncated or not a custom-format archive: restore another "
                                  "backup set.")
    return output["list"].decode(errors="replace")


def _slurp(output: dict[str, bytes], name: str, stream: IO[bytes]) -> None:
    output[name] = stream.read()


def _lines(stream: IO[bytes], tail: collections.deque[str]) -> None:
    for raw in stream:
        line = raw.decode(errors="replace").rstrip("\n")
        if not line.startswith(("pg_restore: processing", "pg_restore: creating", "pg_restore: dropping")):
            tail.append(line)


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        with contextlib.suppress(OSError):
            proc.kill()


def _close(procs: list[subprocess.Popen], readers: list[threading.Thread]) -> None:
    """End the input of every process, wait for it, and for what it wrote to be read."""
    for proc in procs:
        with contextlib.suppress(OSError):
            proc.stdin.close()                          # type: ignore[union-attr]
    for proc in procs:
        proc.wait()
    for thread in readers:
        thread.join()


def _raise_failure(engine, restore: subprocess.Popen, tail: collections.deque[str]) -> None:
    if restore.returncode == 0:
        return
    text = "\n".join(tail)
    if _OUT_OF_ORDER in text:
        raise NeedsSeekableArchive("pg_restore cannot restore this archive from a stream (its data is out of "
                                   "order)", hint="It is restored from a staged copy instead.")
    raise engine.failure(text, action="pg_restore (streamed)")
