"""Slot claims in the store: ``<stamp>/schedule/<schedule>/<slot>.json`` when a scheduler takes a slot, and
``<slot>.published.json`` once its backup-due was published.

A scheduler publishes a slot only after it created that slot's claim, write-once: on a store that can create
exclusively (``ExclusiveCreate``: a local or mounted directory, SMB, S3 with credentials through a conditional PUT)
the first writer wins atomically and every other scheduler logs and skips, so two schedulers publish each slot
exactly once. On a store without it (anonymous S3) the claim is check-then-write and then read back: a
near-simultaneous race can still
let both publish, which costs nothing more than a redelivery, since the backup-set id is derived from the slot
(:func:`slot_set_id`) and both events name the same set.

The newest published marker is the scheduler's memory: after an outage the newest slot missed since then is
published once (reason ``catch-up``). A claim left without its marker for a while (its scheduler died between
claiming and publishing, e.g. while the broker was down) is taken over by that catch-up (:meth:`abandoned`), under
the same backup-set id. Claims and markers are signed when a signing key is configured; an unsigned, forged or
unreadable claim still blocks its slot, but only a trusted marker counts as "last published". Claims and markers
get no S3 Object Lock retention (``prune`` deletes the old ones) and are never mirrored: they coordinate this
site's scheduler, and a scheduler started against a mirror target claims its own slots there.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from contracts.envelope import is_future
from workers.artifacts.sets import put_once
from workers.storage.base import UNLOCKED, ExclusiveCreate, ObjectNotFound, StorageBackend
from workers.storage.signing import verified

log = logging.getLogger("appsvc_dr.scheduler")
FOLDER = "schedule"
_SLOT_NAME = re.compile(r"^(\d{8}T\d{6}Z)\.json$")
_DONE_SUFFIX = ".published.json"
INSTANCE = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


def slot_stamp(slot: datetime) -> str:
    return f"{slot.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}"


def _slot_iso(slot: datetime) -> str:
    """The slot as written into claims and markers: UTC, whole seconds (like its name)."""
    return slot.astimezone(timezone.utc).replace(microsecond=0).isoformat()


def slot_set_id(stamp: str, schedule: str, slot: datetime) -> str:
    """The backup-set id of a slot, the same in every scheduler: ``<slot time>-<8 hex of stamp/schedule/slot>``
    (the ``new_backup_set_id`` form, dated by the slot)."""
    digest = hashlib.sha256(f"{stamp}/{schedule}/{slot_stamp(slot)}".encode()).hexdigest()[:8]
    return f"{slot_stamp(slot)}-{digest}"


def claim_key(stamp: str, schedule: str, slot: datetime) -> str:
    return f"{stamp}/{FOLDER}/{schedule}/{slot_stamp(slot)}.json"


def published_key(stamp: str, schedule: str, slot: datetime) -> str:
    return f"{stamp}/{FOLDER}/{schedule}/{slot_stamp(slot)}{_DONE_SUFFIX}"


@dataclass(frozen=True)
class Claim:
    won: bool               # this scheduler created the claim and may publish
    holder: str | None      # who holds it (for the log)


class SlotBook:
    """The slot claims of one stamp in one store."""

    def __init__(self, backend: StorageBackend, stamp: str, *, instance: str = INSTANCE) -> None:
        self.backend, self.stamp, self.instance = backend, stamp, instance
        self.exclusive = isinstance(backend, ExclusiveCreate)

    def claim(self, schedule: str, slot: datetime, set_id: str, reason: str) -> Claim:
        """Create the slot's claim; ``won`` is False when another scheduler (or an earlier run) has it."""
        key = claim_key(self.stamp, schedule, slot)
        body = self._body(key, schedule, slot, backup_set_id=set_id, reason=reason, claimed_by=self.instance)
        if not self._create(key, body):
            return Claim(False, self._holder(key))
        if self.exclusive:
            return Claim(True, self.instance)
        holder = self._holder(key)                  # read back: the last of two racing writers wins
        return Claim(holder == self.instance, holder)

    def mark_published(self, schedule: str, slot: datetime, set_id: str, event_id: str) -> None:
        """Record that the slot's backup-due went out (a takeover may find it recorded already: same set)."""
        key = published_key(self.stamp, schedule, slot)
        self._create(key, self._body(key, schedule, slot, backup_set_id=set_id, event_id=event_id,
                                     published_by=self.instance))

    def _create(self, key: str, body: bytes) -> bool:
        """Write ``key`` unless it exists; True if this call wrote it (atomically so on an exclusive store)."""
        return put_once(self.backend, key, body, metadata=UNLOCKED)   # pruned: never Object-Locked

    def abandoned(self, schedule: str, slot: datetime, older_than: timedelta) -> bool:
        """The slot was claimed more than ``older_than`` ago and never marked published."""
        if self.backend.exists(published_key(self.stamp, schedule, slot)):
            return False
        try:
            claimed = self.backend.stat(claim_key(self.stamp, schedule, slot)).modified
        except ObjectNotFound:
            return False
        return claimed < datetime.now(timezone.utc) - older_than

    def _body(self, key: str, schedule: str, slot: datetime, **fields: str) -> bytes:
        body = json.dumps({"format": 1, "stamp": self.stamp, "schedule": schedule, "slot": _slot_iso(slot),
                           "at": datetime.now(timezone.utc).isoformat(), **fields}, indent=2, sort_keys=True)
        return body.encode()                    # signed by put_once

    def _read(self, key: str) -> dict | None:
        try:
            with self.backend.open(key) as stream:
                data = json.loads(stream.read(64 * 1024))
        except (ObjectNotFound, ValueError):
            return None
        return verified(self.backend, key, data, "schedule claim") if isinstance(data, dict) else None

    def _holder(self, key: str) -> str | None:
        data = self._read(key)
        return str(data.get("claimed_by")) if data else None

    def slots(self, schedule: str) -> list[tuple[datetime, str]]:
        """The claimed slots of ``schedule``, oldest first, with their claim keys; names that are not slots, and
        slots dated in the future (someone with write access chose them), are left out."""
        return [(slot, key) for slot, key in self._listed(schedule) if not key.endswith(_DONE_SUFFIX)]

    def _listed(self, schedule: str) -> list[tuple[datetime, str]]:
        found = []
        for info in self.backend.list(f"{self.stamp}/{FOLDER}/{schedule}/"):
            name = info.key.rsplit("/", 1)[-1]
            match = _SLOT_NAME.match(name[:-len(_DONE_SUFFIX)] + ".json" if name.endswith(_DONE_SUFFIX) else name)
            if not match:
                continue
            slot = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
            if is_future(slot):
                log.warning("ignoring schedule object %s: dated in the future", info.key)
                continue
            found.append((slot, info.key))
        return sorted(found)

    def last_published(self, schedule: str) -> datetime | None:
        """The newest slot whose published marker is readable and trusted (signed, when verify keys are
        configured) and names this slot."""
        for slot, key in reversed(self._listed(schedule)):
            if key.endswith(_DONE_SUFFIX):
                data = self._read(key)
                if data is not None and data.get("slot") == _slot_iso(slot) and data.get("schedule") == schedule:
                    return slot
        return None

    def prune(self, schedule: str, keep: int) -> int:
        """Delete the claims and markers of all but the newest ``keep`` slots: only the newest is claimed again."""
        old = self.slots(schedule)[:-keep] if keep > 0 else []
        for slot, key in old:
            self.backend.delete(published_key(self.stamp, schedule, slot))
            self.backend.delete(key)
        return len(old)
