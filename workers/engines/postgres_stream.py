"""Restoring a PostgreSQL database that does not exist yet while its dump is still arriving.

The plaintext stream (fetched, decrypted, decompressed and hashed as it goes) is piped into ``pg_restore``,
which restores it into a scratch database on the same server. pg_restore runs the SQL of the archive's table of
contents as soon as it has read it, so that SQL is proven first: the source checks the archive's first bytes
against a hash in the signed record before it returns any of them (``workers.artifacts.head``), those bytes go to
``pg_restore --list``, and pg_restore starts only once the listing shows the table of contents ends inside them.
What follows is table data, fed through COPY into the scratch database. No client sees it before it is proven:
the scratch database is renamed to the target only when all of these hold:

- the stream was read to its end and its signed SHA-256 matched (the source's block exited cleanly);
- pg_restore succeeded;
- the archive names the expected database;
- every table the archive holds is there.

Any failure drops the scratch database. Its name is derived from the target (``appsvc_dr_restoring_<hash>``),
so a run killed before the rename leaves one database behind, which the next restore of the same target drops
first.

An existing target is not restored this way: replacing it in place (pg_restore ``--clean`` from a verified
staged copy, :meth:`PostgresEngine.restore`) keeps its owner, grants and settings. An archive that pg_restore
cannot read from a pipe (out-of-order data), or whose table of contents does not fit in the verified head, raises
:class:`NeedsSeekableArchive`, and the caller falls back to the staged copy.
"""
from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import itertools
import logging
import os
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
PIPE_BYTES = 1 << 20                  # pg_restore keeps reading while the next chunk decodes (Linux default: 64 KiB)
_OUT_OF_ORDER = "out-of-order restore request"


class NeedsSeekableArchive(PermanentError):
    """pg_restore needs to seek in this archive: restore it from a staged copy instead."""


def scratch_for(target: str) -> str:
    """The scratch database a streamed restore of ``target`` goes into before the rename (≤ 63 bytes)."""
    return SCRATCH_PREFIX + hashlib.sha256(target.encode()).hexdigest()[:24]


def restore_streamed(engine, database: str, open_source: Callable[[], ContextManager[BinaryIO]], *, total: int,
                     verified_head: int, options: RestoreOptions | None = None,
                     progress: Progress | None = None) -> RestoreResult:
    """Restore the archive ``open_source()`` yields into the new database ``database`` of ``engine`` (a
    :class:`~workers.engines.postgres.PostgresEngine`), as the module says. The source proves its first
    ``verified_head`` bytes before it returns any of them (``workers.artifacts.head``), and the rest by the end of
    its block. ``total`` is the plaintext size, for ``progress`` percentages."""
    started, reporter = time.monotonic(), ProgressReporter(progress)
    scratch = scratch_for(database)
    engine.drop(scratch)                                   # a leftover of a run killed before its rename
    engine.create(scratch)
    try:
        listing = _pipe(engine, scratch, open_source, total, verified_head, reporter)
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


def _pipe(engine, scratch: str, open_source, total: int, verified_head: int, reporter: ProgressReporter) -> str:
    """The listing of the archive's first ``verified_head`` bytes; then the whole archive fed to pg_restore (into
    ``scratch``). pg_restore runs the table of contents' SQL as soon as it has read it, so it starts only once
    the lister proved that the table of contents ends inside those verified bytes."""
    tool, env = engine.settings.pg_restore, engine.tool_env(None)
    with open_source() as plain:                        # leaving it cleanly = every hash checked
        head, size = [], 0
        while size < verified_head and (data := plain.read(min(CHUNK, verified_head - size))):
            head.append(data)
            size += len(data)
        listing = _list(tool, env, head, size, cut=size == verified_head)
        restore = _start(tool, env, [tool, "--no-owner", "--exit-on-error", "--verbose",
                                     f"--dbname=dbname={conninfo_value(scratch)}"], subprocess.DEVNULL)
        with contextlib.suppress(OSError):
            fcntl.fcntl(restore.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)  # type: ignore[union-attr]
        tail: collections.deque[str] = collections.deque(maxlen=40)
        reader = threading.Thread(target=_lines, args=(restore.stderr, tail), daemon=True)
        reader.start()
        sink, done = WriteBehind(restore.stdin), 0                           # type: ignore[arg-type]
        try:
            for data in itertools.chain(head, iter(lambda: plain.read(CHUNK), b"")):
                sink.write(data)
                done += len(data)
                if total:
                    reporter(min(99, done * 100 // total))
            head = []
            sink.finish()
        except BrokenPipeError:                         # pg_restore stopped reading: its own error says why
            sink.abort()
            _close(restore, reader)
            _raise_failure(engine, restore, tail)
            raise
        except BaseException:
            with contextlib.suppress(OSError):
                restore.kill()
            sink.abort()
            _close(restore, reader)
            raise
    _close(restore, reader)
    _raise_failure(engine, restore, tail)
    return listing


def _start(tool: str, env: dict[str, str], argv: list[str], out) -> subprocess.Popen:
    try:
        return subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE)
    except OSError:
        raise missing_tool(os.path.basename(tool), "APPSVC_DR_DATABASE__PG_RESTORE") from None


def _list(tool: str, env: dict[str, str], head: list[bytes], size: int, *, cut: bool) -> str:
    """pg_restore --list of the archive's first bytes (``cut``: the archive goes on after them)."""
    lister = _start(tool, env, [tool, "--list"], subprocess.PIPE)
    output: dict[str, bytes] = {}
    threads = [threading.Thread(target=_slurp, args=(output, name, stream), daemon=True)
               for name, stream in (("list", lister.stdout), ("errors", lister.stderr))]
    for thread in threads:
        thread.start()
    with contextlib.suppress(BrokenPipeError):          # it stops reading where it fails: its status says why
        for data in head:
            lister.stdin.write(data)                    # type: ignore[union-attr]
    with contextlib.suppress(OSError):
        lister.stdin.close()                            # type: ignore[union-attr]
    lister.wait()
    for thread in threads:
        thread.join()
    if lister.returncode != 0 and cut:
        raise NeedsSeekableArchive(f"the archive's table of contents is not inside its first {size:,} "
                                   "verified bytes", hint="It is restored from a staged copy instead.")
    if lister.returncode != 0 or not output.get("list"):
        detail = output.get("errors", b"").decode(errors="replace").strip()[-500:]
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


def _close(proc: subprocess.Popen, reader: threading.Thread) -> None:
    """End pg_restore's input, wait for it and for its output to be read."""
    with contextlib.suppress(OSError):
        proc.stdin.close()                              # type: ignore[union-attr]
    proc.wait()
    reader.join()


def _raise_failure(engine, restore: subprocess.Popen, tail: collections.deque[str]) -> None:
    if restore.returncode == 0:
        return
    text = "\n".join(tail)
    if _OUT_OF_ORDER in text:
        raise NeedsSeekableArchive("pg_restore cannot restore this archive from a stream (its data is out of "
                                   "order)", hint="It is restored from a staged copy instead.")
    raise engine.failure(text, action="pg_restore (streamed)")
