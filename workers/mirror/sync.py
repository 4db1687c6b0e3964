"""Bring one mirror target in line with the primary for a stamp: what it should hold, what it lacks, copy it.

What a target should hold for a stamp: every object under ``<stamp>/`` on the primary — artifacts, records, the
catalog's files (plan, manifest, the complete / failed / expired markers, the stamp's entry in its stamp index),
drill results, recoveries' state — except the sets the target's own retention policy would delete (so a target
keeping fewer sets is not refilled) and what only coordinates this site's running processes: the file-share
repository's locks, job leases (``<stamp>/<set>/jobs/``) and the scheduler's slot claims (``<stamp>/schedule/``).
Objects are copied as stored (the same bytes, the same key: records and signatures stay valid) and streamed with
bounded memory: one chunk at a time (an artifact up to 5 GiB to S3: one PUT request fed from the primary's GET,
signed with the record's SHA-256, so S3 checks the bytes too), else one part (S3) or chunk (SMB, local). An
artifact with a record is verified while it streams, against the record's stored size and SHA-256, and the
target's upload is aborted when it does not match (a corrupted object on the primary is never copied); any other
object is hashed as it streams and read back from the target. A recovery's state (``<stamp>/recoveries/``) is rewritten as the recovery runs: it is compared by content
and copied again when it changed. Within a set, artifacts go first, then records, then the catalog's files with the
completion marker last, so a set is complete on the target only once it is all there.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import BinaryIO, Callable

from workers.artifacts.jobs import JOBS
from workers.artifacts.records import RECORD_SUFFIX, read_record
from workers.artifacts.retention import SetState, decide, set_states
from workers.artifacts.service import sha256_of
from workers.artifacts.setmanifest import MANIFEST, PLAN
from workers.mirror.shared import dropped_functions, dropped_snapshots
from workers.artifacts.sets import COMPLETE, set_prefix, stamp_index_key
from workers.runtime.errors import PermanentError, TransientError
from workers.storage.base import ObjectInfo, ObjectNotFound, StorageBackend
from workers.storage.codec import IntegrityError

CHUNK = 1024 * 1024
# Under <stamp>/, never mirrored: a lock, lease or slot claim is only valid where it was taken (a scheduler run
# against a mirror target claims its own slots there).
EXCLUDED = ("fileshare/locks/", "schedule/")
MUTABLE = ("recoveries/",)              # under <stamp>/: rewritten in place (workers.recover.state), compared by content


@dataclass(frozen=True)
class Policy:
    keep_last: int
    keep_within: timedelta | None
    grace: timedelta


@dataclass
class Comparison:
    """What a target should hold, and which of those objects it lacks (or holds with another size)."""

    wanted: list[ObjectInfo]
    missing: list[ObjectInfo]
    differs: list[str] = field(default_factory=list)   # keys present on the target with the wrong size / bytes


class CorruptOnPrimary(PermanentError):
    default_hint = ("The object on the primary does not match its record: it was damaged or altered. It is not "
                    "copied; the target keeps its earlier good copy. Restore from the target (--store NAME) or "
                    "run `appsvc-dr artifacts verify` and re-run the backup.")


class PrimaryView:
    """What the primary holds for a stamp (its listing and its sets' states), read once however many targets
    are compared with it. With ``scope`` (folders under ``<stamp>/``, e.g. one set's), only those folders are
    listed, on the primary and on each target: the work of one event, proportional to what it names (the
    target's retention is not consulted: an event names a new set, which it keeps)."""

    def __init__(self, primary: StorageBackend, stamp: str, now: datetime | None = None, *,
                 scope: tuple[str, ...] | None = None) -> None:
        self.primary, self.stamp, self.now = primary, stamp, now
        self.scope = scope
        self._states: list[SetState] | None = None
        self._objects: list[ObjectInfo] | None = None

    @property
    def states(self) -> list[SetState]:
        if self._states is None:
            self._states = set_states(self.primary, self.stamp, self.now, signed_markers=True)   # see retention
        return self._states

    @property
    def objects(self) -> list[ObjectInfo]:
        """Everything under ``<stamp>/``, and the stamp's entry in the catalog's stamp index (so `status` on the
        copy finds the stamp)."""
        if self._objects is None:
            self._objects = [o for prefix in self.prefixes for o in self.primary.list(prefix)]
            try:
                self._objects.append(self.primary.stat(stamp_index_key(self.stamp)))
            except ObjectNotFound:
                pass
        return self._objects

    @property
    def prefixes(self) -> tuple[str, ...]:
        """What is listed: the scope's folders, or the whole stamp."""
        if self.scope is None:
            return (f"{self.stamp}/",)
        return tuple(p for p in self.scope if not any(p != q and p.startswith(q) for q in self.scope))


def wanted_objects(primary: StorageBackend, stamp: str, policy: Policy, now: datetime | None = None, *,
                   view: PrimaryView | None = None) -> list[ObjectInfo]:
    """Every object of ``stamp`` on the primary the target should hold, in copy order."""
    view = view or PrimaryView(primary, stamp, now)
    skipped = tuple(f"{stamp}/{e}" for e in EXCLUDED)
    if view.scope is None:
        plan = decide(stamp, view.states, keep_last=policy.keep_last, keep_within=policy.keep_within, now=now,
                      incomplete_grace=policy.grace)
        skipped += tuple(set_prefix(stamp, s) for s in plan.delete)
        dropped = set(plan.delete)
        shared = (dropped_functions(primary, stamp, dropped) | dropped_snapshots(primary, stamp, dropped)
                  if dropped else set())
    else:
        shared = set()
    return sorted((o for o in view.objects if not o.key.startswith(skipped) and not _lease(o.key)
                   and o.key not in shared), key=_order)


def _lease(key: str) -> bool:
    """A job lease: ``<stamp>/<set>/jobs/...`` (workers.artifacts.jobs.store_prefix)."""
    parts = key.split("/", 3)
    return len(parts) == 4 and parts[2] == JOBS


def _order(info: ObjectInfo) -> tuple[str, int, str]:
    """Per folder: artifacts, then records, then plan and manifest, then the completion marker."""
    folder, _, name = info.key.rpartition("/")
    rank = 3 if name == COMPLETE else 2 if name in (PLAN, MANIFEST) else 1 if name.endswith(RECORD_SUFFIX) else 0
    return (folder.split("/")[1] if "/" in folder else "", rank, info.key)


def compare(primary: StorageBackend, target: StorageBackend, stamp: str, policy: Policy, *,
            read_data: bool = False, now: datetime | None = None, view: PrimaryView | None = None) -> Comparison:
    """The objects the target lacks; ``read_data`` also hashes the target's copies of recorded artifacts."""
    view = view or PrimaryView(primary, stamp, now)
    wanted = wanted_objects(primary, stamp, policy, now, view=view)
    there = {o.key: o.size for prefix in view.prefixes for o in target.list(prefix)}
    index = stamp_index_key(stamp)
    if any(info.key == index for info in wanted):
        try:
            there[index] = target.stat(index).size
        except ObjectNotFound:
            pass
    mutable = tuple(f"{stamp}/{m}" for m in MUTABLE)
    missing, differs = [], []
    for info in wanted:
        size = there.get(info.key)
        if size is None:
            missing.append(info)
        elif size != info.size or (read_data and not _matches_record(primary, target, info.key)) or \
                (info.key.startswith(mutable) and _hash(primary, info.key) != _hash(target, info.key)):
            missing.append(info)
            differs.append(info.key)
    return Comparison(wanted, missing, differs)


def _matches_record(primary: StorageBackend, target: StorageBackend, key: str) -> bool:
    want = expected(primary, key)
    if want is None:
        return True
    return _hash(target, key) == want


def expected(backend: StorageBackend, key: str) -> tuple[int, str] | None:
    """(stored size, stored SHA-256) the record of ``key`` on ``backend`` names; None without a usable record."""
    if key.endswith(RECORD_SUFFIX):
        return None
    try:
        rec = read_record(backend, key, verify=False)
    except (IntegrityError, PermanentError):
        return None
    return (rec.stored_size, rec.stored_sha256) if rec is not None else None


def _hash(backend: StorageBackend, key: str) -> tuple[int, str]:
    with backend.open(key) as stream:
        digest, size = sha256_of(stream)
    return size, digest


class _Checked(io.RawIOBase):
    """Passes the primary's bytes through, hashing them; with an expectation, fails the read that would end the
    stream (so the target's upload is aborted, never completed) when size or SHA-256 differ."""

    def __init__(self, source: BinaryIO, key: str, want: tuple[int, str] | None) -> None:
        self._source, self.key, self.want = source, key, want
        self.digest, self.count = hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size if size and size > 0 else CHUNK)
        self.digest.update(data)
        self.count += len(data)
        if self.want is not None and (not data or self.count >= self.want[0]):
            self._check(final=not data)
        return data

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def _check(self, final: bool) -> None:
        size, sha = self.want  # type: ignore[misc]
        if self.count > size or (final and self.count < size) or \
                (self.count == size and self.digest.hexdigest() != sha):
            raise CorruptOnPrimary(f"{self.key} on the primary fails verification (read {self.count} bytes; the "
                                   f"record says {size} bytes, SHA-256 {sha[:12]}…)")


def copy_object(primary: StorageBackend, target: StorageBackend, info: ObjectInfo) -> int:
    """Copy one object as stored; returns its size. Raises CorruptOnPrimary, or TransientError when what landed
    on the target does not match what was sent."""
    want = expected(primary, info.key)
    meta = primary.stat(info.key).metadata
    with primary.open(info.key) as stream:
        source = _Checked(stream, info.key, want)
        landed = target.put(info.key, source, size=want[0] if want else None, metadata=meta,  # type: ignore[arg-type]
                            sha256=want[1] if want else None)
    size, sha = source.count, source.digest.hexdigest()
    if landed.size != size or (want is None and _hash(target, info.key) != (size, sha)):
        raise TransientError(f"{info.key} on {target.name} does not match what was copied (size {landed.size}, "
                             f"sent {size})", hint="Copied again on the retry; if it persists, check the target.")
    return size


@dataclass
class Budget:
    """Bounded work for one run (the timer's catch-up): at most ``objects`` copies and about ``bytes``, shared
    by every stamp and target of a tick. One object is always copied whole."""
    objects: int
    bytes: int
    copied: int = 0
    bytes_copied: int = 0

    def spent(self) -> bool:
        return self.copied >= self.objects or self.bytes_copied >= self.bytes

    def take(self, size: int) -> None:
        self.copied += 1
        self.bytes_copied += size


@dataclass
class SyncResult:
    wanted: int
    copied: int = 0
    bytes_copied: int = 0
    corrupt: list[str] = field(default_factory=list)      # keys skipped: damaged on the primary
    backlog: list[ObjectInfo] = field(default_factory=list)

    @property
    def lag_since(self) -> datetime | None:
        return min((o.modified for o in self.backlog), default=None)


def sync(primary: StorageBackend, target: StorageBackend, stamp: str, policy: Policy, *,
         read_data: bool = False, progress: Callable[[int], None] | None = None,
         cancelled: Callable[[], bool] = lambda: False,
         report: Callable[[SyncResult], None] = lambda result: None, view: PrimaryView | None = None,
         budget: Budget | None = None) -> SyncResult:
    """Copy what the target lacks. Storage errors of the target propagate (a transient one: retried later);
    objects damaged on the primary are skipped and listed in ``corrupt``. ``report`` gets the result however
    the run ends (what was copied, what is still missing). With a ``budget``, copying stops once it is spent
    (what is left stays in the backlog, for the next run)."""
    diff = compare(primary, target, stamp, policy, read_data=read_data, view=view)
    result = SyncResult(len(diff.wanted), backlog=list(diff.missing))
    done: set[str] = set()
    try:
        for info in diff.missing:
            if cancelled() or (budget is not None and budget.spent()):
                break
            try:
                size = copy_object(primary, target, info)
            except CorruptOnPrimary:
                result.corrupt.append(info.key)
                continue
            done.add(info.key)
            result.copied += 1
            result.bytes_copied += size
            if budget is not None:
                budget.take(size)
            if progress is not None:
                progress(size)
    finally:
        result.backlog = [o for o in diff.missing if o.key not in done]
        report(result)
    return result


def lag_seconds(since: datetime | None, now: datetime | None = None) -> float:
    if since is None:
        return 0.0
    return max(0.0, ((now or datetime.now(timezone.utc)) - since).total_seconds())
