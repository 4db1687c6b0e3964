"""Restoring a database from a backup set: its artifact fetched, decrypted and verified into a staged file the
database server can read, then restored with the engine (used by `restore database` and the restore drill).

A local staged copy is plaintext: it is written 0600 into a fresh 0700 directory (inside the staging directory,
or the temp directory when pg_restore must read a local file but staging is a share), removed afterwards.

A striped backup (``<db>.bak.1ofN`` ... ``NofN`` in the set) is staged stripe by stripe and restored from all of
them; the stripe names come from the stored set, never from the local ``DATABASE__STRIPES`` setting. SQL Server
log backups stored in the set after the full (``<db>.log-<LSN>.trn``) are applied in LSN order."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from workers.artifacts.head import VerifiedHead, head_facts
from workers.artifacts.setmanifest import artifact_key
from workers.artifacts.records import StoredArtifact
from workers.artifacts.service import RECORD_SUFFIX, ArtifactStore
from workers.artifacts.logchain import chain, is_log, log_database
from workers.artifacts.stripes import stripe_keys
from workers.engines.base import DatabaseEngine, RestoreOptions, RestoreResult
from workers.engines.postgres_stream import NeedsSeekableArchive
from workers.engines.settings import DatabaseSettings
from workers.dbbackup.handler import artifact_name
from workers.storage.localfs import PRIVATE_DIR, make_private_dirs
from workers.storage.readahead import write_behind
from workers.storage.settings import StagingSettings
from workers.storage.staged import DATABASE_DIR_SETTING, Root, is_unc, join, locate


@contextlib.contextmanager
def _staged_copy(staging: StagingSettings, engine_name: str, name: str, fill):
    """Write the backup where the database server can read it; remove it afterwards."""
    directory = staging.database_dir
    if is_unc(directory) and engine_name != "postgres":   # SQL Server reads the share; pg_restore a local file
        path = join(directory, name)
        with locate(path, staging, [Root(directory, DATABASE_DIR_SETTING)]) as (backend, key):
            try:
                fill(backend, key)
                yield path
            finally:
                with contextlib.suppress(Exception):
                    backend.delete(key)
        return
    parent = tempfile.gettempdir() if is_unc(directory) else directory
    make_private_dirs(parent)
    with tempfile.TemporaryDirectory(prefix="appsvc-dr-restore-", dir=parent) as private:
        os.chmod(private, PRIVATE_DIR)
        fill(_StagedFile(private), name)
        yield os.path.join(private, name)


CHUNK = 1 << 20


class _StagedFile:
    """The local staged copy: a new 0600 file in the run's private directory. Not fsynced (unlike a store's
    ``put``): it is read at once by pg_restore and deleted, a crash loses nothing, and the fsync of a dump-sized
    file costs seconds of restore time on a busy disk."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def put(self, key: str, stream) -> None:
        if os.path.basename(key) != key or key in ("", ".", ".."):
            raise ValueError(f"staged name {key!r} is not a plain file name")
        fd = os.open(os.path.join(self.directory, key), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out, write_behind(out) as sink:      # written while the next chunk decodes
            while data := stream.read(CHUNK):
                sink.write(data)


class _Silent:
    def __init__(self, label: str, total: int) -> None:
        pass

    def __call__(self, nbytes: int) -> None:
        pass

    def close(self) -> None:
        pass


def backup_keys(store: ArtifactStore, stamp: str, set_id: str, engine_name: str, database: str) -> list[str]:
    """The keys of ``database``'s backup in the set: one, or every stripe in order (PermanentError if one is
    missing)."""
    key = artifact_key(stamp, set_id, "databases", artifact_name(engine_name, database))
    prefix = key.rsplit("/", 1)[0] + "/"
    stored = [i.key[:-len(RECORD_SUFFIX)] for i in store.backend.list(prefix) if i.key.endswith(RECORD_SUFFIX)]
    return stripe_keys(stored, key)


@contextlib.contextmanager
def staged_artifact(staging: StagingSettings, engine: DatabaseEngine, store: ArtifactStore, keys, *, stamp: str,
                    set_id: str, database: str, label: str, say=print,
                    fetch_progress=None) -> Iterator[str | Sequence[str]]:
    """``database``'s artifact of a backup set, fetched, decrypted and verified into a staged file the database
    server can read (its path is yielded; for a striped backup the tuple of every stripe's path, in order, which
    the engine's verify / file_list / restore take as they are); removed afterwards. ``fetch_progress(label,
    total_bytes)`` makes a progress callback (called with byte counts, then ``close()``) for the fetch, e.g. the
    CLI's progress bar."""
    with contextlib.ExitStack() as stack:
        paths = [stack.enter_context(_staged_one(staging, engine, store, keys, key, label, say, fetch_progress))
                 for key in backup_keys(store, stamp, set_id, engine.name, database)]
        yield paths[0] if len(paths) == 1 else tuple(paths)


@contextlib.contextmanager
def _staged_one(staging: StagingSettings, engine: DatabaseEngine, store: ArtifactStore, keys, key: str,
                label: str, say, fetch_progress) -> Iterator[str]:
    record = store.record(key)
    bar = (fetch_progress or _Silent)(f"fetch {Path(key).name}", record.stored_size if record else 0)
    stamp, set_id = key.split("/")[:2]

    def fill(backend, staged_key: str) -> None:
        with store.open_plain(key, keys=keys, progress=bar, read_ahead=True,
                              check_stored=not whole(record)) as plain:
            backend.put(staged_key, plain)
        bar.close()

    with _staged_copy(staging, engine.name, f"{label}-{stamp}-{set_id}-{Path(key).name}", fill) as path:
        say(f"fetched and verified {key} → {path}")
        yield path


def whole(record: StoredArtifact | None) -> bool:
    """Whether the plaintext of ``record``'s artifact is proven as a whole by its SHA-256 in the record (checked
    when the read ends): then its stored bytes need no hash pass of their own (one hash pass, like the packs)."""
    return bool(record and record.plaintext_sha256)


def log_backup_keys(store: ArtifactStore, stamp: str, set_id: str, engine_name: str, database: str) -> list[str]:
    """The set's log backups of ``database`` that continue its full backup's LSN chain, in order (see
    :mod:`workers.artifacts.logchain`); PermanentError on a gap."""
    full = backup_keys(store, stamp, set_id, engine_name, database)[-1]
    prefix = full.rsplit("/", 1)[0] + "/"
    names = [i.key[len(prefix):-len(RECORD_SUFFIX)] for i in store.backend.list(prefix)
             if i.key.endswith(RECORD_SUFFIX)]
    logs = [prefix + n for n in names if is_log(n) and log_database(n) == database]
    if not logs:
        return []
    record = store.trusted_record(full)
    return chain(full, record.metadata if record else None,
                 [(k, r.metadata if r else None) for k, r in ((k, store.trusted_record(k)) for k in logs)])


def restore_from_set(staging: StagingSettings, configured: DatabaseSettings, engine: DatabaseEngine,
                     store: ArtifactStore, keys, *, stamp: str, set_id: str, database: str, target: str,
                     data_path: str | None = None, log_path: str | None = None, progress=None, say=print,
                     fetch_progress=None, options: RestoreOptions | None = None, logs: bool = True) -> RestoreResult:
    """Restore ``database`` of a backup set as ``target`` (WITH REPLACE; MOVE to ``data_path`` / ``log_path``,
    under a new name by default to the server's default directories) and check it. ``options`` default to a
    production restore's: the backup must hold ``database``, no sessions are ended. ``configured`` is kept for
    callers; its restore paths are the drills' (``workers.drill``), never a production restore's. With ``logs``
    (default) the set's SQL Server log backups of the database are applied after the full (WITH NORECOVERY until
    the last); a striped full is restored from every stripe the set holds."""
    label = "restore" if target == database else f"restore-{target}"
    options = options or RestoreOptions(expected_database=database)
    preflight = getattr(engine, "preflight_target", None)       # SQL Server: fail before a long download
    if preflight is not None:
        preflight(target, options)
    chained = log_backup_keys(store, stamp, set_id, engine.name, database) if logs else []
    result = None if chained or not configured.restore_while_fetching else _streamed(
        engine, store, keys, stamp=stamp, set_id=set_id, database=database, target=target, progress=progress,
        say=say, fetch_progress=fetch_progress, options=options)
    if result is None:
        with contextlib.ExitStack() as stack:
            path = stack.enter_context(staged_artifact(staging, engine, store, keys, stamp=stamp, set_id=set_id,
                                                       database=database, label=label, say=say,
                                                       fetch_progress=fetch_progress))
            extra = {}
            if chained:
                extra["logs"] = [stack.enter_context(_staged_one(staging, engine, store, keys, key, label, say,
                                                                 fetch_progress)) for key in chained]
                say(f"applying {len(chained)} log backup(s) after the full backup")
            result = engine.restore(target, path, data_path=data_path, log_path=log_path, progress=progress,
                                    options=options, **extra)  # type: ignore[call-arg]
    for warning in result.warnings:
        say(f"WARNING: {warning}")
    if result.tail_log:
        say(f"tail-log backup of {target} (taken before the restore, WITH NORECOVERY) kept at {result.tail_log}")
    return result


def _streamed(engine: DatabaseEngine, store: ArtifactStore, keys, *, stamp: str, set_id: str, database: str,
              target: str, progress, say, fetch_progress, options: RestoreOptions) -> RestoreResult | None:
    """A new database restored while its artifact is fetched, where the engine can (PostgreSQL: into a scratch
    database renamed once every hash checked out; the archive's first bytes, whose SQL pg_restore runs at once,
    proven by the signed record's head hash before any of them is used); None where it cannot: a striped backup,
    an existing target, an artifact stored without a head hash, an archive pg_restore must seek in."""
    restores_while_fetching = getattr(engine, "restores_while_fetching", None)
    found = backup_keys(store, stamp, set_id, engine.name, database)
    if restores_while_fetching is None or len(found) != 1 or not restores_while_fetching(target):
        return None
    key, record = found[0], store.trusted_record(found[0])
    head = head_facts(record.metadata) if record else None
    if record is None or head is None:             # stored before heads were hashed: its SQL cannot be proven first
        return None
    bar = (fetch_progress or _Silent)(f"fetch {Path(key).name}", record.stored_size)

    @contextlib.contextmanager
    def open_source():
        with store.open_plain(key, keys=keys, progress=bar, read_ahead=True,
                              check_stored=not whole(record)) as plain:
            yield VerifiedHead(plain, *head)

    try:
        with contextlib.closing(bar):
            result = engine.restore_streamed(      # type: ignore[attr-defined]
                target, open_source, total=record.plaintext_size, verified_head=head[1], progress=progress,
                options=options)
    except NeedsSeekableArchive as exc:
        say(f"{exc.message}: fetching and verifying {key} into a staged copy first")
        return None
    say(f"fetched, verified and restored {key} → {target} while it downloaded (a scratch database renamed once "
        "every hash checked out)")
    return result
