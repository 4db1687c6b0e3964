"""One backup per (backup set, database) on the db-backup worker (``workers.artifacts.jobs`` says why and how).

The db-backup worker reaches the staging directory but may hold no store credentials, so its job records live
there, side by side in one directory (no directory per set is left behind): ``<database_dir>/.jobs/<stamp>+<set>+
<artifact name>+<random>.lease.json`` while the backup runs, and ``…+done.json`` once it made a backup (``+`` is
in no stamp, set id or artifact name), holding its follow-ups (``artifact-ready``, one per stripe, and
``database-backed-up``; not the log-health warning, which a re-emission does not repeat; a
database skipped on purpose, e.g. not the preferred replica, gets none: a later request asks again). A request for
a database the set already has a backup of re-emits those (with ids derived from the new request: downstream, the
upload worker finds the artifact stored and re-emits ``artifact-stored``) and runs no second backup. The records
of sets older than :data:`KEEP` are removed by :meth:`StagingJobs.prune` (each fan-out calls it).

The directory is no stronger than the staging share it lies on: a done record is re-emitted only when it names
this job's own backup (:func:`foreign`: this artifact or its stripes, at the staged paths this job writes, of
this database), else it is ignored with a warning and the backup runs again. So a record planted there cannot
make the worker publish an ``artifact-ready`` for another file (``secrets/SystemSecrets.json``, another staged
backup) or mark a database backed up without a backup.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator

from contracts import ArtifactReady, DatabaseBackedUp, Envelope
from workers.artifacts.jobs import DEFAULT_TTL, JobKey, JobLease, done_body, replay
from workers.artifacts.stripes import parse as parse_stripe
from workers.engines.base import stripe_paths
from workers.runtime.worker import JobContext
from workers.storage.base import ObjectNotFound, StorageBackend
from workers.storage.localfs import make_private_dirs
from workers.storage.settings import StagingSettings
from workers.storage.staged import DATABASE_DIR_SETTING, Root, is_unc, join, locate

log = logging.getLogger("appsvc_dr.dbbackup")
JOBS_DIR = ".jobs"
DONE = "done.json"
SEP = "+"
KEEP = timedelta(days=14)
RESULTS = (ArtifactReady, DatabaseBackedUp)


class StagingJobs:
    def __init__(self, staging: StagingSettings, *, source: str, ttl: timedelta = DEFAULT_TTL) -> None:
        self.staging, self.source, self.ttl = staging, source, ttl

    @contextlib.contextmanager
    def _backend(self) -> Iterator[StorageBackend]:
        directory = self.staging.database_dir
        if not is_unc(directory):
            make_private_dirs(directory)
        with locate(join(directory, JOBS_DIR), self.staging, [Root(directory, DATABASE_DIR_SETTING)],
                    what="job records directory") as (backend, _):
            yield backend

    def once(self, event: Envelope, key: JobKey, ctx: JobContext, run: Callable[[], list[Envelope]],
             foreign: Callable[[list[Envelope]], str | None]) -> list[Envelope]:
        """``run()``'s follow-ups, unless ``key`` was done already (its follow-ups re-made for ``event``) or runs
        for another event now (``DuplicateJob``). A done record whose follow-ups ``foreign`` finds fault with
        (it returns why) is ignored: the job runs again."""
        prefix = job_prefix(key)
        with self._backend() as backend:
            done = self._done(backend, prefix + DONE, event, foreign, warn=False)    # read again under the lease
            if done is None:
                with JobLease(backend, prefix, job=ctx.job_key, what=str(key), ttl=self.ttl) as lease:
                    done = self._done(backend, prefix + DONE, event, foreign)
                    if done is None:
                        out = run()
                        lease.check()               # taken over meanwhile: its result wins, this one is retried
                        if any(isinstance(e, ArtifactReady) for e in out):   # a skip is no backup: ask again
                            body = done_body([e for e in out if isinstance(e, RESULTS)])  # not the warnings
                            backend.put(prefix + DONE, io.BytesIO(body), size=len(body))
                        return out
        ctx.logger.info("%s was backed up for this set already: re-emitting its result, no new backup", key)
        return done

    def _done(self, backend: StorageBackend, key: str, event: Envelope,
              foreign: Callable[[list[Envelope]], str | None], *, warn: bool = True) -> list[Envelope] | None:
        """The follow-ups of the done record ``key``, re-made for ``event``; None if there is none, or it is
        damaged or not this job's own (warned)."""
        body = _read_done(backend, key, warn=warn)
        if body is None:
            return None
        try:
            out = replay(event, body, RESULTS, source=self.source)
        except ValueError as exc:                     # pydantic's ValidationError is one
            if warn:
                log.warning("ignoring job record %s, which is not a valid result (%s): the backup runs again",
                            key, str(exc).splitlines()[0][:200])
            return None
        why = foreign(out)
        if why is not None:
            if warn:
                log.warning("ignoring job record %s: %s; the backup runs again (check who writes to the staging "
                            "directory's %s/)", key, why, JOBS_DIR)
            return None
        return out

    def prune(self, now: datetime | None = None) -> int:
        """Remove the job records of sets whose records are all older than :data:`KEEP`; returns how many."""
        cutoff = (now or datetime.now(timezone.utc)) - KEEP
        groups: dict[str, list] = {}
        with self._backend() as backend:
            for info in backend.list(f"{JOBS_DIR}/"):
                groups.setdefault(SEP.join(info.key.split(SEP)[:2]), []).append(info)     # stamp+set
            old = [infos for infos in groups.values() if max(i.modified for i in infos) < cutoff]
            for infos in old:
                for info in infos:
                    backend.delete(info.key)
        return sum(len(infos) for infos in old)


def foreign(results: list[Envelope], *, database: str, name: str, staged: str) -> str | None:
    """Why ``results`` (a done record's follow-ups) are not the backup of ``database`` as artifact ``name``
    staged at ``staged`` (its stripes where ``stripe_paths`` puts them), or None when they are."""
    ready = [e for e in results if isinstance(e, ArtifactReady)]
    if not ready:
        return "it names no backup"
    for event in ready:
        payload = event.payload
        base, index, count = parse_stripe(payload.name)
        if payload.component != "databases" or base != name:
            return f"it names artifact {payload.component}/{payload.name[:128]!r}, not {name!r}"
        if payload.staged_path != stripe_paths(staged, count)[index - 1]:
            return f"it names staged file {payload.staged_path[:256]!r}, not one this backup writes"
    for event in results:
        if isinstance(event, DatabaseBackedUp) and (event.payload.database != database
                                                     or event.payload.staged_path not in (None, staged)):
            return f"it reports database {event.payload.database[:128]!r} staged at {event.payload.staged_path!r}"
    return None


def job_prefix(key: JobKey) -> str:
    """The start of every record name of ``key``'s job in the staging directory."""
    return f"{JOBS_DIR}/{SEP.join((key.stamp, key.set_id, key.name))}{SEP}"


def _read_done(backend: StorageBackend, key: str, *, warn: bool = True) -> dict | None:
    try:
        with backend.open(key) as stream:
            data = json.loads(stream.read(1024 * 1024))
    except ObjectNotFound:
        return None
    except ValueError:
        if warn:
            log.warning("ignoring damaged job record %s: the backup runs again", key)
        return None
    return data if isinstance(data, dict) else None
