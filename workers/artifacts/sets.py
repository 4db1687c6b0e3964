"""State of a backup set in the store: its plan, its completion marker and its skip notes (how sets are found
is :mod:`workers.artifacts.setscan`).

Layout under ``<stamp>/<backup-set-id>/`` (besides the artifacts and records, see ``catalog``):

* ``plan.json`` — written once by the catalog worker from ``backup-due``: requested ``components``,
  ``reason``, ``requested_at``, ``requested_by``, the causing ``event_id`` and, optionally, ``expected``:
  ``{component: minimum artifact count}`` (e.g. ``{"databases": 2}``; a later producer may fill it in).
  Readers ignore fields they do not know, so the format can grow.
* ``complete.json`` — the completion marker, written once when every planned component has its artifacts.
  Only a set with this marker counts as complete (for listings and retention); retention deletes it
  first, so a half-deleted set never looks complete.
* ``failed.json`` / ``expired.json`` — written once by the catalog when a job of the set was dead-lettered or
  its deadline passed (see :mod:`workers.artifacts.lifecycle` for the states).
* ``skipped/<database>.json`` — a skip note, written once by the catalog when the db-backup worker skipped a
  database on purpose (``database-backed-up`` with ``skipped_reason``, e.g. not the preferred Always On
  replica): database, reason, server, how to fix. A skip does **not** count as an artifact — a set missing a
  database cannot restore the stamp, so it stays incomplete — but it turns a silent wait into
  "waiting: appservice_metering skipped (not the preferred replica)" (:func:`waiting_for`). If the database is
  backed up into the set later, the set completes normally and the note stays as history.

Databases count per database, not per artifact: a striped backup is one artifact per stripe and counts once
all its stripes are stored (:mod:`workers.artifacts.stripes`).

A backup set exists only when planned: the catalog writes ``plan.json`` from an accepted ``backup-due``. Every
worker that writes into a set first calls :func:`require_plan`: without a plan it retries (the plan may still
be on its way through a busy catalog queue) and, once the set deadline has passed, refuses the artifact for
good. A set without a plan is never complete.
"""
from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable, Mapping

from contracts.envelope import NAME_PATTERN, Envelope, set_id_time
from workers.artifacts.setmanifest import MANIFEST, PLAN, BackupSet
from workers.artifacts.logchain import is_log
from workers.artifacts.stripes import database_count, database_of
from workers.runtime.errors import PermanentError, TransientError
from workers.storage.base import ExclusiveCreate, ObjectExists, ObjectNotFound, StorageBackend
from workers.storage.signing import sign_body, verified

log = logging.getLogger("appsvc_dr.artifacts.sets")
COMPLETE = "complete.json"
FAILED_FILE, EXPIRED_FILE = "failed.json", "expired.json"   # see workers.artifacts.lifecycle
SKIPPED = "skipped/"
CATALOG_FILES = (PLAN, COMPLETE, MANIFEST, FAILED_FILE, EXPIRED_FILE)
DEFAULT_DEADLINE = timedelta(hours=6)


def set_prefix(stamp: str, set_id: str) -> str:
    return f"{stamp}/{set_id}/"


STAMP_INDEX = "_catalog/stamps/"        # one object per stamp the catalog planned a set for (status lists them)


def stamp_index_key(stamp: str) -> str:
    return f"{STAMP_INDEX}{stamp}.json"


def stored_stamps(backend: StorageBackend) -> set[str]:
    """The stamps of the index; names that are no stamp name (the store is not trusted) are ignored."""
    names = {info.key[len(STAMP_INDEX):-5] for info in backend.list(STAMP_INDEX) if info.key.endswith(".json")}
    bad = sorted(n for n in names if not re.match(NAME_PATTERN, n) or ".." in n)
    if bad:
        log.warning("ignoring %d entries of %s that are no stamp name (written by something else): %s", len(bad),
                    STAMP_INDEX, ", ".join(repr(n[:80]) for n in bad[:5]))
    return names - set(bad)


def id_time(set_id: str) -> datetime | None:
    """The time encoded in a ``new_backup_set_id`` id, or None for ids of another form."""
    return set_id_time(set_id)


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(timezone.utc) if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


# ------------------------------------------------------------------------------------------------ plan
@dataclass(frozen=True)
class Plan:
    stamp: str
    backup_set_id: str
    components: tuple[str, ...]
    reason: str
    requested_at: datetime | None
    requested_by: str | None = None
    event_id: str | None = None
    expected: Mapping[str, int] | None = None
    unserved: tuple[str, ...] = ()        # asked for, but this site does not back them up (left out of the plan)

    def missing(self, counts: Mapping[str, int]) -> dict[str, int]:
        """Per planned component, how many more artifacts are needed (empty when the plan is met)."""
        expected = self.expected or {}
        need = {c: max(int(expected.get(c, 1)), 1) - counts.get(c, 0) for c in self.components}
        return {c: n for c, n in need.items() if n > 0}

    def to_json(self) -> bytes:
        body = {"format": 1, "stamp": self.stamp, "backup_set_id": self.backup_set_id,
                "components": list(self.components), "reason": self.reason,
                "requested_at": self.requested_at.isoformat() if self.requested_at else None,
                "requested_by": self.requested_by,
                "event_id": self.event_id}
        if self.expected:
            body["expected"] = dict(self.expected)
        if self.unserved:
            body["unserved"] = list(self.unserved)
        return json.dumps(body, indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: Mapping) -> "Plan":
        expected = data.get("expected")
        return cls(stamp=str(data.get("stamp", "")), backup_set_id=str(data.get("backup_set_id", "")),
                   components=tuple(data.get("components") or ()), reason=str(data.get("reason", "")),
                   requested_at=parse_time(data.get("requested_at")), requested_by=data.get("requested_by"),
                   event_id=data.get("event_id"),
                   expected=dict(expected) if isinstance(expected, dict) else None,
                   unserved=tuple(data.get("unserved") or ()))


def read_object(backend: StorageBackend, key: str) -> dict | None:
    """The JSON object stored at ``key``; None when it is missing or not a JSON object (damaged)."""
    try:
        with backend.open(key) as stream:
            data = json.loads(stream.read(1024 * 1024))
    except (ObjectNotFound, ValueError):
        return None
    return verified(backend, key, data, "catalog object") if isinstance(data, dict) else None   # signed?


def put_once(backend: StorageBackend, key: str, body: bytes, *, metadata: dict[str, str] | None = None) -> bool:
    """Write ``key`` unless it exists; True if this call wrote it. Atomic on a backend with exclusive create
    (local, SMB, S3 with credentials: the first writer wins); elsewhere check-then-write, so two racing writers
    may both write (the last body wins), which callers must tolerate. Signed (``signing``); ``metadata`` goes to
    ``put_new`` / ``put``."""
    if isinstance(backend, ExclusiveCreate):
        try:
            backend.put_new(key, sign_body(backend, key, body), metadata)
        except ObjectExists:
            return False
        return True
    if backend.exists(key):
        return False
    body = sign_body(backend, key, body)
    backend.put(key, io.BytesIO(body), size=len(body), **({"metadata": metadata} if metadata else {}))
    return True


def read_plan(backend: StorageBackend, stamp: str, set_id: str) -> Plan | None:
    data = read_object(backend, set_prefix(stamp, set_id) + PLAN)
    return Plan.from_json(data) if data is not None else None


def write_plan(backend: StorageBackend, plan: Plan) -> bool:
    """Write the plan once; a plan already there (a redelivered ``backup-due``) is kept as it is."""
    return put_once(backend, set_prefix(plan.stamp, plan.backup_set_id) + PLAN, plan.to_json())


# ---------------------------------------------------------------------------------------------- marker
def read_marker(backend: StorageBackend, stamp: str, set_id: str) -> dict | None:
    return read_object(backend, set_prefix(stamp, set_id) + COMPLETE)


def write_marker(backend: StorageBackend, stamp: str, set_id: str, marker: Mapping) -> bool:
    body = json.dumps({"format": 1, **marker}, indent=2, sort_keys=True, default=str).encode()
    return put_once(backend, set_prefix(stamp, set_id) + COMPLETE, body)


def counts_of(names: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Artifacts per component from (component, name) pairs; ``databases`` counts whole database backups (a
    striped one once every stripe is there, see :mod:`workers.artifacts.stripes`)."""
    by_component: dict[str, list[str]] = {}
    for component, name in names:
        by_component.setdefault(component, []).append(name)
    counts = {c: len(n) for c, n in by_component.items()}
    if "databases" in by_component:       # log backups (``.trn``) extend a database, they are not one
        counts["databases"] = database_count(n for n in by_component["databases"] if not is_log(n))
    return counts


def component_counts(backup_set: BackupSet) -> dict[str, int]:
    return counts_of((a.key.split("/")[2], a.key.split("/", 3)[3]) for a in backup_set.artifacts
                     if len(a.key.split("/", 3)) == 4)


def is_complete(plan: Plan | None, backup_set: BackupSet) -> bool:
    """Every planned component has its artifacts (at least one, or ``expected`` many). A set without a
    plan was never planned (or its plan is still on its way): it is not complete, whatever it holds."""
    return plan is not None and bool(backup_set.artifacts) and not plan.missing(component_counts(backup_set))


def require_plan(backend: StorageBackend, stamp: str, set_id: str, *, deadline: timedelta = DEFAULT_DEADLINE,
                 since: datetime | None = None, now: datetime | None = None, from_event: bool = False) -> Plan:
    """The set's plan, before anything is written into the set. Without one: TransientError (retry: the
    ``backup-due`` may still be queued at the catalog) until ``deadline`` after the set's time (the time in
    its id, else ``since``; ``since`` alone with ``from_event``) — however short the retry backoff, the
    TransientError's ``until`` keeps it retrying up to then — and after that PermanentError (never planned).
    Future-dated ids never get here: the contracts refuse them."""
    plan = read_plan(backend, stamp, set_id)
    if plan is not None:
        return plan
    now = now or datetime.now(timezone.utc)
    start = (since if from_event else id_time(set_id) or since) or now
    what = f"backup set {stamp}/{set_id} has no plan"
    if now < start + deadline:
        raise TransientError(f"{what} yet: the catalog writes it from backup-due, so it may still come (waiting "
                             f"until {deadline} after the set's time, {start:%Y-%m-%d %H:%M:%S} UTC)",
                             hint="Usually the catalog worker is behind and the plan follows; if it does not, "
                                  "check that the catalog worker runs and consumes backup-due.",
                             until=start + deadline)   # retried past the backoff list, up to the deadline
    raise PermanentError(f"{what}: it was never planned from a backup-due within the set deadline "
                         f"({deadline}), or retention deleted it; nothing was written into it",
                         hint="Only sets planned by the catalog from an accepted backup-due take artifacts. Publish "
                              "a backup-due for a new set (`appsvc-dr publish backup-due`) and back up into that; a "
                              "producer sending artifacts for unplanned sets is misconfigured or hostile.")


def require_planned(backend: StorageBackend, event: Envelope, deadline: timedelta = DEFAULT_DEADLINE) -> Plan:
    """:func:`require_plan` for the set an event names (its stamp and correlation id). A ``backup-due`` is the
    request the catalog plans from, so its plan is due ``deadline`` after the event, whatever its id says (an
    operator may request a set under an id of their choosing); any other event waits from the set's time."""
    return require_plan(backend, event.stamp, event.correlation_id, deadline=deadline, since=event.occurred_at,
                        from_event=event.type == "backup-due")


# ------------------------------------------------------------------------------------------ skip notes
def skip_key(stamp: str, set_id: str, database: str) -> str:
    return f"{set_prefix(stamp, set_id)}{SKIPPED}{database}.json"


def write_skip(backend: StorageBackend, stamp: str, set_id: str, database: str, note: Mapping) -> bool:
    """Record once that ``database`` was skipped for the set; True if this call wrote the note."""
    body = json.dumps({"format": 1, **note}, indent=2, sort_keys=True, default=str).encode()
    return put_once(backend, skip_key(stamp, set_id, database), body)


def read_skip(backend: StorageBackend, stamp: str, set_id: str, database: str) -> dict | None:
    return read_object(backend, skip_key(stamp, set_id, database))


def read_skips(backend: StorageBackend, stamp: str, set_id: str) -> dict[str, dict]:
    """Every skip note of the set, by database name."""
    prefix = set_prefix(stamp, set_id) + SKIPPED
    notes = (read_object(backend, info.key) for info in backend.list(prefix) if info.key.endswith(".json"))
    return {str(n["database"]): n for n in notes if n and n.get("database")}


def has_database(backup_set: BackupSet, database: str) -> bool:
    """Whether the set holds an artifact of ``database`` (``databases/<database>.bak`` / ``.dump``, or one of
    its stripes ``.bak.<i>of<N>``)."""
    return any(parts[2] == "databases" and database_of(parts[3]) == database
               for parts in (a.key.split("/", 3) for a in backup_set.artifacts) if len(parts) == 4)


def skip_text(reason: str) -> str:
    """``skipped: not the preferred replica`` → ``not the preferred replica``."""
    return reason.split(":", 1)[1].strip() if reason.lower().startswith("skipped:") else reason


def waiting_for(plan: Plan | None, backup_set: BackupSet, skips: Mapping[str, Mapping]) -> list[str]:
    """What an incomplete set still waits for, skipped databases first and by name:
    ``["appservice_metering skipped (not the preferred replica)", "databases ×1"]``."""
    missing = dict(plan.missing(component_counts(backup_set))) if plan else {}
    lines = []
    for database, note in sorted(skips.items()):
        if not has_database(backup_set, database):
            lines.append(f"{database} skipped ({skip_text(str(note.get('reason', '')))})")
            if missing.get("databases"):
                missing["databases"] -= 1
    return lines + [f"{c} ×{n}" for c, n in missing.items() if n > 0]
