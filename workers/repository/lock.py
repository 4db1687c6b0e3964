"""Repository locks: a sync and a prune never run on the same file-share repository at once.

Like restic's: a lock is a small JSON object ``<stamp>/fileshare/locks/<random>.json`` naming its holder
(what, host, pid, since when). A sync takes a *shared* lock (several syncs may run: they only add), a prune
an *exclusive* one. Acquiring = write your own lock, then list the others: if one conflicts (either side is
exclusive) and is not stale, remove yours and fail, naming the holder. Two that race both see each other and
both back off, so at most one wins, never both.

A lock is refreshed every ``REFRESH_EVERY`` by a background thread; one not refreshed for ``STALE_AFTER``
(or held by a process on this host that no longer exists) is stale and ignored — an exclusive acquire
removes it. A holder whose lock lapsed or was removed must not trust what it read: ``check()`` raises
``LockLost`` (the sync calls it before committing its snapshot, and is retried).
"""
from __future__ import annotations

import io
import json
import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from workers.runtime.errors import TransientError
from workers.storage.base import UNLOCKED, ObjectNotFound, StorageBackend
from workers.storage.heartbeat import Heartbeat, holder_alive

STALE_AFTER = timedelta(minutes=30)
REFRESH_EVERY = timedelta(minutes=5)


class RepositoryLocked(TransientError):
    """Another process holds a conflicting lock (a sync retries this with backoff)."""


class LockLost(TransientError):
    default_hint = ("This process's repository lock was not refreshed in time or was removed as stale (a prune "
                    "may have run meanwhile): the job is retried and syncs again against the current index.")


@dataclass(frozen=True)
class LockInfo:
    key: str
    kind: str
    exclusive: bool
    holder: str
    host: str
    pid: int
    created_at: datetime
    refreshed_at: datetime

    def stale(self, now: datetime, stale_after: timedelta = STALE_AFTER) -> bool:
        if now - self.refreshed_at > stale_after:
            return True
        return not holder_alive(self.host, self.pid)

    def describe(self, now: datetime) -> str:
        age = int((now - self.refreshed_at).total_seconds())
        return (f"{self.kind} lock of {self.holder} (host {self.host}, pid {self.pid}), held since "
                f"{self.created_at.isoformat(timespec='seconds')}, last refreshed {age}s ago")


def locks_prefix(stamp: str) -> str:
    return f"{stamp}/fileshare/locks/"


def read_locks(backend: StorageBackend, stamp: str) -> list[LockInfo]:
    """Every lock of the repository (a lock deleted while being read is skipped; an unreadable or implausible
    one is shown as held by 'unknown', refreshed at its object's time).

    A lock object is written by whoever can write to the store, so it is hostile: its fields are checked
    (types, lengths, printable text, a real pid, timezone-aware times) and its freshness is never later than
    the store's own modification time of the object, so a lock claiming to be refreshed in the future cannot
    hold the repository for ever (it goes stale ``STALE_AFTER`` after it was last written)."""
    found = []
    for info in backend.list(locks_prefix(stamp)):
        try:
            with backend.open(info.key) as stream:
                data = json.loads(stream.read(MAX_LOCK_BYTES))
            found.append(_lock_info(info.key, data, info.modified))
        except ObjectNotFound:
            continue
        except (ValueError, KeyError, TypeError, AttributeError):
            found.append(LockInfo(info.key, "unknown", True, "unknown (unreadable lock)", "?", 0, info.modified,
                                  info.modified))
    return found


MAX_LOCK_BYTES = 64 * 1024
MAX_PID = 2 ** 31 - 1


def _text(data: dict, field: str) -> str:
    value = data[field]
    if not isinstance(value, str) or not 0 < len(value) <= 256 or not value.isprintable():
        raise ValueError(f"lock field {field} is not short printable text")
    return value


def _when(data: dict, field: str) -> datetime:
    value = datetime.fromisoformat(_text(data, field))
    if value.tzinfo is None:
        raise ValueError(f"lock field {field} has no time zone")
    return value.astimezone(timezone.utc)


def _lock_info(key: str, data: dict, written: datetime) -> LockInfo:
    exclusive, pid = data["exclusive"], data["pid"]
    if not isinstance(exclusive, bool) or type(pid) is not int or not 0 < pid <= MAX_PID:
        raise ValueError("lock fields exclusive/pid are not a boolean and a process id")
    created, refreshed = _when(data, "created_at"), _when(data, "refreshed_at")
    return LockInfo(key, _text(data, "kind"), exclusive, _text(data, "holder"), _text(data, "host"), pid,
                    min(created, written), min(refreshed, written))


class RepoLock(Heartbeat):
    """``with RepoLock(backend, stamp, "sync", holder=...):`` — acquire, refresh in the background, release."""

    def __init__(self, backend: StorageBackend, stamp: str, kind: str, *, holder: str, exclusive: bool = False,
                 stale_after: timedelta = STALE_AFTER, refresh_every: timedelta = REFRESH_EVERY) -> None:
        self.backend, self.stamp, self.kind, self.holder, self.exclusive = backend, stamp, kind, holder, exclusive
        self.stale_after, self.refresh_every = stale_after, refresh_every
        self.key = f"{locks_prefix(stamp)}{secrets.token_hex(16)}.json"
        self.created_at = datetime.now(timezone.utc)
        self.removed_stale: list[LockInfo] = []
        super().__init__()

    def _write(self) -> None:
        body = json.dumps({"kind": self.kind, "exclusive": self.exclusive, "holder": self.holder,
                           "host": socket.gethostname(), "pid": os.getpid(),
                           "created_at": self.created_at.isoformat(),
                           "refreshed_at": datetime.now(timezone.utc).isoformat()}).encode()
        started = time.monotonic()
        self.backend.put(self.key, io.BytesIO(body), size=len(body), metadata=UNLOCKED)  # deleted when done
        self._wrote(started)

    def acquire(self) -> "RepoLock":
        self._write()
        try:
            now = datetime.now(timezone.utc)
            for other in read_locks(self.backend, self.stamp):
                if other.key == self.key or not (self.exclusive or other.exclusive):
                    continue
                if other.stale(now, self.stale_after):
                    if self.exclusive:                       # take over: remove what a dead holder left
                        self.backend.delete(other.key)
                        self.removed_stale.append(other)
                    continue
                wait = "the sync is retried by itself" if self.kind == "sync" else "then run this again"
                raise RepositoryLocked(
                    f"the file-share repository of stamp {self.stamp} is locked: {other.describe(now)}",
                    hint=f"Wait until that {other.kind} finishes ({wait}). If that process is gone, its lock is "
                         f"ignored once it is {_minutes(self.stale_after)} old, or remove it now with "
                         f"`appsvc-dr snapshots unlock --stamp {self.stamp} --all` (only when nothing runs).")
        except BaseException:
            self.backend.delete(self.key)
            raise
        self._start(self.refresh_every.total_seconds(), "fileshare-lock")
        return self

    def check(self) -> None:
        """Raise ``LockLost`` if this lock may have been ignored by someone else meanwhile."""
        lapsed = self._lapsed(self.stale_after.total_seconds())
        if lapsed is not None:
            raise LockLost(f"the {self.kind} lock on the file-share repository of stamp {self.stamp} was lost "
                           f"(last refreshed {int(lapsed)}s ago)", hint=None if self.kind == "sync" else
                           "Nothing was changed: run it again (the lock lapsed, e.g. the machine was suspended).")


def _minutes(value: timedelta) -> str:
    return f"{int(value.total_seconds() // 60)} min"


def unlock(backend: StorageBackend, stamp: str, *, everything: bool = False,
           stale_after: timedelta = STALE_AFTER) -> list[LockInfo]:
    """Remove stale locks (every lock with ``everything``); returns what was removed."""
    now = datetime.now(timezone.utc)
    removed = [lock for lock in read_locks(backend, stamp) if everything or lock.stale(now, stale_after)]
    for lock in removed:
        backend.delete(lock.key)
    return removed
