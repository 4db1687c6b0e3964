"""Exactly one job per (backup set, component, name): job keys, deterministic follow-up ids, and job leases.

At-least-once delivery means a ``backup-due`` may arrive twice (redelivered around a broker restart, or published
twice), and each copy fans out. A job is therefore named by *what* it makes — stamp, backup-set id, component and
artifact name (:class:`JobKey`) — never by the event id, and before it starts a worker checks:

1. **done?** the artifact is already stored and verified (or, for the db-backup worker, which may not reach the
   store, its staging job record says done): re-emit the result events, start nothing;
2. **running?** a live lease of another holder exists (:class:`JobLease`): a different event asking for the same
   job is a duplicate, acked without running (``DuplicateJob``, counted as ``outcome="duplicate"``) — the holder's
   own event stays unacked until it finishes, so if the holder dies the broker redelivers *that* event; the same
   event redelivered while its first delivery still runs (the broker dropped the first connection) waits and is
   retried (:class:`JobRunning`), so it finds the result and re-emits it;
3. otherwise the job runs under its lease.

A lease is a small JSON object ``<prefix><random>.lease.json`` (holder, job, host, pid, expiry), refreshed by a
background thread while the job runs. Claiming = write your own lease, then list the prefix: with another live
lease present, remove yours (two claimants that race both see each other and both back off, then try again after
a random pause, so at most one ever wins). A lease past its expiry, or held by a process of this host that no
longer exists, is stale: its holder died, and the next claimant takes the job over (and removes it).

In the store, leases live under ``<stamp>/<set>/jobs/<component>/<name>/`` (:func:`store_prefix`): inside the set,
so retention deletes them with it; catalog, manifests and restores read only ``*.record.json``, plan and markers,
so a lease is never taken for an artifact. Leases are signed like the catalog's files when a signing key is
configured; one that fails its check is ignored (a forged lease cannot block a job). Leases get no S3 Object Lock
retention (``UNLOCKED``): their holder deletes them. The mirror never copies them.

Follow-up events get ids derived from their cause (:func:`follow_up_id`): a redelivered event re-emits the very
same events, so downstream workers recognise them.
"""
from __future__ import annotations

import io
import json
import logging
import os
import random
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable
from uuid import UUID, uuid5

from contracts import Envelope, Payload
from workers.artifacts.sets import set_prefix
from workers.runtime.errors import DuplicateJob, TransientError
from workers.storage.base import UNLOCKED, ObjectNotFound, StorageBackend
from workers.storage.heartbeat import Heartbeat, holder_alive
from workers.storage.signing import sign_body, verified

log = logging.getLogger("appsvc_dr.jobs")
JOBS = "jobs"
LEASE_SUFFIX = ".lease.json"
DEFAULT_TTL = timedelta(minutes=5)
MAX_TTL = timedelta(hours=1)          # no lease is written for longer (leases read from the store are capped)
CLAIM_TRIES = 6


@dataclass(frozen=True)
class JobKey:
    """What a job makes: one artifact ``name`` of ``component`` in backup set ``set_id`` of ``stamp``."""

    stamp: str
    set_id: str
    component: str
    name: str

    def __str__(self) -> str:
        return f"{self.stamp}/{self.set_id}/{self.component}/{self.name}"


def store_prefix(job: JobKey) -> str:
    """Where the job's leases live in the store: inside its backup set (deleted with it by retention)."""
    return f"{set_prefix(job.stamp, job.set_id)}{JOBS}/{job.component}/{job.name}/"


def follow_up_id(cause: Envelope, *parts: str) -> UUID:
    """A follow-up's id, derived from its cause's id and what it is: the same cause gives the same id."""
    return uuid5(cause.event_id, "/".join(parts))


def follow_up(cause: Envelope, model: type[Envelope], payload: Payload, *, source: str, part: str = "") -> Envelope:
    """``cause.follow_up`` with a deterministic id (one per cause, event type and ``part``)."""
    return cause.follow_up(model, payload, source=source,
                           event_id=follow_up_id(cause, model.event_type, *([part] if part else [])))


# -------------------------------------------------------------------------------------------------- leases
@dataclass(frozen=True)
class LeaseInfo:
    key: str
    holder: str
    job: str                    # the holder's job key (worker and event id): the same event redelivered matches
    host: str
    pid: int
    running: bool               # False while claiming (it may still back off), True once it won
    expires_at: datetime

    def live(self, now: datetime) -> bool:
        return now < self.expires_at and holder_alive(self.host, self.pid)

    def describe(self, now: datetime) -> str:
        left = int((self.expires_at - now).total_seconds())
        return f"held by {self.holder} (host {self.host}, pid {self.pid}, job {self.job}), expires in {left}s"


def read_leases(backend: StorageBackend, prefix: str) -> list[LeaseInfo]:
    """Every readable lease under ``prefix``; a lease that is gone, damaged or fails its signature is skipped."""
    found = []
    for info in backend.list(prefix):
        if not info.key.endswith(LEASE_SUFFIX):
            continue
        try:
            with backend.open(info.key) as stream:
                data = json.loads(stream.read(64 * 1024))
            data = verified(backend, info.key, data, "job lease") if isinstance(data, dict) else None
            if data is None:
                continue
            expires = datetime.fromisoformat(data["expires_at"])
            expires = expires if expires.tzinfo else expires.replace(tzinfo=timezone.utc)
            # A lease lives at most MAX_TTL after the store wrote it, whatever it claims: one dated ahead
            # would otherwise hold the job for ever.
            expires = min(expires, info.modified + MAX_TTL)
            pid = data["pid"]
            if type(pid) is not int or not 0 < pid < 2**22 or not all(
                    isinstance(data[k], str) and len(data[k]) <= 300 for k in ("holder", "job", "host")):
                raise ValueError("malformed lease")
            found.append(LeaseInfo(info.key, data["holder"], data["job"], data["host"], pid, bool(data["running"]),
                                   expires))
        except ObjectNotFound:
            continue
        except (ValueError, KeyError, TypeError, OverflowError):
            log.warning("ignoring unreadable job lease %s", info.key)
    return found


class JobRunning(TransientError):
    """This very event's job runs under an earlier delivery of it (the broker redelivered it after a lost
    connection): retried, so it finds the finished job and re-emits its results."""

    default_hint = ("An earlier delivery of this event is still running it; the job is retried and re-emits the "
                    "result once that finishes (or takes over when its lease expires).")


class JobBusy(TransientError):
    default_hint = "Several deliveries claimed the same job at once; it is retried."


class JobLeaseLost(TransientError):
    default_hint = ("This job's lease expired or was taken over (the process stalled past the lease time): its "
                    "result is not trusted; the job is retried.")


class JobLease(Heartbeat):
    """``with JobLease(backend, prefix, job=ctx.job_key, what=str(key)):`` — claim, refresh, release."""

    def __init__(self, backend: StorageBackend, prefix: str, *, job: str, what: str, ttl: timedelta = DEFAULT_TTL,
                 holder: str | None = None) -> None:
        if not timedelta(0) < ttl <= MAX_TTL:
            raise ValueError(f"a job lease lives between 0 and {MAX_TTL} (got {ttl})")
        self.backend, self.prefix, self.job, self.what, self.ttl = backend, prefix, job, what, ttl
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self.key = f"{prefix}{secrets.token_hex(12)}{LEASE_SUFFIX}"
        self.taken_over: list[LeaseInfo] = []
        self.running = False
        super().__init__()

    def _write(self) -> None:
        started = time.monotonic()
        body = json.dumps({"format": 1, "job": self.job, "holder": self.holder, "what": self.what,
                           "host": socket.gethostname(), "pid": os.getpid(), "running": self.running,
                           "expires_at": (datetime.now(timezone.utc) + self.ttl).isoformat()}).encode()
        body = sign_body(self.backend, self.key, body)
        self.backend.put(self.key, io.BytesIO(body), size=len(body), metadata=UNLOCKED)   # deleted when done
        self._wrote(started)

    def acquire(self) -> "JobLease":
        for attempt in range(CLAIM_TRIES):
            self._write()
            try:
                now = datetime.now(timezone.utc)
                others = [lease for lease in read_leases(self.backend, self.prefix) if lease.key != self.key]
                live = [lease for lease in others if lease.live(now)]
                if not live:
                    self._take_over(others, now)
                    self.running = True
                    self._write()
                    break
            except BaseException:
                self.backend.delete(self.key)
                raise
            self.backend.delete(self.key)
            self._refuse(live, now)
            time.sleep(random.uniform(0.05, 0.4) * (attempt + 1))     # a race: back off, try again
        else:
            raise JobBusy(f"job {self.what} was claimed by several deliveries at once {CLAIM_TRIES} times")
        self._start(self.ttl.total_seconds() / 4, "job-lease")
        return self

    def _take_over(self, stale: Iterable[LeaseInfo], now: datetime) -> None:
        for lease in stale:
            log.warning("job %s: taking over from a holder that died (%s)", self.what, lease.describe(now))
            self.backend.delete(lease.key)
            self.taken_over.append(lease)

    def _refuse(self, live: list[LeaseInfo], now: datetime) -> None:
        """Raise unless every live lease is only claiming (a race worth another try)."""
        same = [lease for lease in live if lease.job == self.job]
        if same:
            until = max(lease.expires_at for lease in same) + self.ttl
            raise JobRunning(f"job {self.what} is still running under an earlier delivery of this event: "
                             f"{same[0].describe(now)}", delay=min(60.0, self.ttl.total_seconds() / 4), until=until)
        running = [lease for lease in live if lease.running]
        if running:
            raise DuplicateJob(f"job {self.what} already runs for another event: {running[0].describe(now)}")

    def check(self) -> None:
        """Raise :class:`JobLeaseLost` if someone may have taken the job over meanwhile."""
        lapsed = self._lapsed(self.ttl.total_seconds())
        if lapsed is not None:
            raise JobLeaseLost(f"the lease on job {self.what} was lost (last refreshed {int(lapsed)}s ago)")


# ------------------------------------------------------------------------------------------ done records
def done_body(events: Iterable[Envelope]) -> bytes:
    """A job's result, as re-emittable follow-ups: their types and payloads (ids derive from each cause)."""
    return json.dumps({"format": 1, "finished_at": datetime.now(timezone.utc).isoformat(),
                       "events": [{"type": e.type, "payload": e.payload.model_dump(mode="json")} for e in events]},
                      indent=2, sort_keys=True).encode()


def replay(cause: Envelope, body: dict[str, Any], models: Iterable[type[Envelope]], *, source: str) -> list[Envelope]:
    """The follow-ups a done record describes (one per type), re-made for ``cause`` (ids derived from it)."""
    by_type = {m.event_type: m for m in models}
    items = body.get("events") or []
    many = {t for t in by_type if sum(str(i.get("type")) == t for i in items) > 1}
    out = []
    for item in items:
        model = by_type.get(str(item.get("type")))
        if model is None:
            raise ValueError(f"done record names an unknown event type {item.get('type')!r}")
        payload_model = model.model_fields["payload"].annotation
        payload = payload_model.model_validate(item.get("payload"), strict=False)  # type: ignore[union-attr]
        part = str(getattr(payload, "name", "")) if model.event_type in many else ""   # e.g. one per stripe
        out.append(follow_up(cause, model, payload, source=source, part=part))
    return out
