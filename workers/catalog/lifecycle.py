"""The catalog ends every backup set: ``failed`` when one of its jobs was dead-lettered, ``expired`` at its deadline.

* ``job-failed`` that is final (``will_retry`` false, severity ``error``, from another worker) for a planned,
  unfinished set → ``failed.json`` and one ``job-failed`` (worker ``catalog``, error class ``BackupSetFailed``)
  naming the set, the component, the worker's error and its how-to-fix.
* On a timer (``RETENTION__SET_CHECK_INTERVAL``), every open set of every known stamp whose deadline
  (``RETENTION__SET_DEADLINE``, per component ``RETENTION__COMPONENT_DEADLINES``) has passed →
  ``expired.json`` and one ``job-failed`` (error class ``BackupSetExpired``) saying exactly what is missing,
  the likely cause (skipped database, worker down, jobs still running) and how to fix it.

Sets whose deadline passed more than a week ago (a store from before deadlines were checked) expire with one log
line instead of a notification each. The state change is written to the store first and once
(:func:`workers.artifacts.lifecycle.write_terminal`); only the writer whose body was kept notifies, so a second
catalog replica (or a redelivery) stays silent. The notification's event id is derived from stamp, set and state, so the rare race both replicas win still
carries one id the notifier can deduplicate on. A late artifact still completes a failed or expired set (the
catalog says so in its log and ``backup-set-completed`` follows as usual).

Known stamps: the configured one, every stamp the catalog planned a set for (``_catalog/stamps/<stamp>.json``,
written once per stamp, so a restarted catalog finds them), and stamps of events seen since start.
"""
from __future__ import annotations

import io
import json
import logging
import uuid
from datetime import datetime, timedelta, timezone

from contracts import Envelope, JobFailed, JobFailedPayload
from workers.artifacts.lifecycle import (EXPIRED, FAILED, OPEN_STATES, SetStatus, stamp_sets, waiting,
                                         write_terminal)
from workers.artifacts.service import ArtifactStore
from workers.artifacts.setmanifest import read_set
from workers.artifacts.sets import (STAMP_INDEX, component_counts, read_plan, read_skips, stamp_index_key,
                                   stored_stamps)
from workers.artifacts.settings import RetentionSettings
from workers.storage.base import StorageBackend

log = logging.getLogger("appsvc_dr.catalog")
STAMPS = STAMP_INDEX
STALE = timedelta(days=7)    # sets whose deadline passed longer ago expire silently (a store from before lifecycles)
_IDS = uuid.UUID("5b0f3e7a-1c4d-4e2b-9a8f-6d7c2e1b0a94")
WORKER_OF = {"secrets": "secrets", "databases": "db-backup", "fileshare": "fileshare"}
COMPONENT_OF = {"secrets": "secrets", "db-backup": "databases", "fileshare": "fileshare"}
# Workers whose dead letters never fail a set: the catalog's own, and the mirror's (a copy to a mirror target
# failed; the set on the primary is unaffected, AppsvcDrMirrorLagging tells).
NOT_SET_JOBS = ("catalog", "mirror")


def notice_id(stamp: str, set_id: str, state: str) -> uuid.UUID:
    """The one event id of a set's failed/expired notification."""
    return uuid.uuid5(_IDS, f"{stamp}/{set_id}/{state}")


def remember_stamp(backend: StorageBackend, stamp: str) -> None:
    key = stamp_index_key(stamp)
    if not backend.exists(key):
        body = json.dumps({"stamp": stamp}).encode()
        backend.put(key, io.BytesIO(body), size=len(body))


def likely_cause(store: ArtifactStore, status: SetStatus, missing: list[str]) -> tuple[str, str]:
    """(cause, how to fix) of an expired set, from what the store knows: skip notes, what arrived at all."""
    skips = read_skips(store.backend, status.stamp, status.set_id)
    causes, fixes = [], []
    if skips:
        names = ", ".join(sorted(skips))
        causes.append(f"db-backup skipped {names} on purpose ({'; '.join(str(n.get('reason')) for n in skips.values())})")
        fixes.append(next(iter(skips.values())).get("hint") or "fix why db-backup skipped it")
    counts = component_counts(read_set(store, status.stamp, status.set_id))
    for component in (line.split(" ×")[0] for line in missing if " ×" in line):
        worker = WORKER_OF.get(component, component)
        via = " (or the upload worker, which stores its dumps)" if component == "databases" else ""
        if not counts.get(component):
            causes.append(f"no {component} artifact arrived at all: the {worker} worker{via} is likely down or not "
                          f"consuming")
        else:
            causes.append(f"too few {component} artifacts arrived ({counts[component]}): the {worker} worker{via} "
                          f"may be stuck, or a job still running or lost")
        fixes.append(f"check that the {worker} worker runs (`appsvc-dr worker {worker}`, its logs and "
                     f"/healthz) and its queue and dead letters (`appsvc-dr dlq list {worker}`)")
    fixes.append(f"then request a new set (`appsvc-dr publish backup-due --stamp {status.stamp}`); an artifact "
                 f"that still arrives for {status.set_id} completes it late")
    return "; ".join(causes) or "unknown", "; ".join(fixes)


class Lifecycle:
    """The catalog's part of the set lifecycle; :meth:`check` is the worker's timer."""

    def __init__(self, retention: RetentionSettings, store: ArtifactStore, stamps: tuple[str, ...] = (),
                 writer: str | None = None) -> None:
        self.retention, self.store = retention, store
        self.stamps: set[str] = set(stamps)
        self.writer = writer or uuid.uuid4().hex   # tells this replica's terminal writes from another's
        self.observers: list = []                  # called with (stamp, [SetStatus]) after each scan

    def known_stamps(self) -> list[str]:
        try:
            self.stamps |= stored_stamps(self.store.backend)
        except Exception as exc:  # noqa: BLE001 - an unreadable index must not stop the check of known stamps
            log.warning("cannot list the catalog's stamp index: %s", exc)
        return sorted(self.stamps)

    def scan(self, stamp: str) -> list[SetStatus]:
        sets = stamp_sets(self.store.backend, stamp, self.retention.deadline_for)
        for observe in self.observers:
            observe(stamp, sets)
        return sets

    # ---- deadlines -------------------------------------------------------------------------------
    def check(self, now: datetime | None = None) -> list[Envelope]:
        """Expire every open set past its deadline; one notification per set this replica expired."""
        now = now or datetime.now(timezone.utc)
        out: list[Envelope] = []
        for stamp in self.known_stamps():
            sets = self.scan(stamp)
            overdue = [s for s in sets if s.overdue(now)]
            stale = [s.set_id for s in overdue if s.deadline and now - s.deadline > STALE]
            expired = [self._expire(s, now, notify=s.set_id not in stale) for s in overdue]
            out.extend(e for e in expired if e is not None)
            if stale:
                log.warning("%d backup set(s) of %s were past their deadline by more than %s (from before set "
                            "deadlines were checked, or the catalog was down that long): marked expired without a "
                            "notification each: %s", len(stale), stamp, STALE, ", ".join(stale))
            if overdue:
                self.scan(stamp)
        return out

    def _expire(self, status: SetStatus, now: datetime, notify: bool = True) -> Envelope | None:
        missing = waiting(self.store, status)
        cause, fix = likely_cause(self.store, status, missing)
        what = "; ".join(missing) or "nothing (complete by its artifacts; the marker will follow)"
        body = {"expired_at": now.isoformat(), "deadline": status.deadline.isoformat() if status.deadline else None,
                "missing": missing, "reason": f"missing {what}: {cause}", "hint": fix, "writer": self.writer}
        if write_terminal(self.store.backend, status.stamp, status.set_id, EXPIRED, body) is None or not notify:
            return None
        log.error("backup set %s/%s EXPIRED at its deadline %s: missing %s; likely cause: %s. How to fix: %s",
                  status.stamp, status.set_id, body["deadline"], what, cause, fix)
        message = (f"backup set {status.stamp}/{status.set_id} expired: its deadline {body['deadline']} passed "
                   f"(requested {status.requested_at.isoformat() if status.requested_at else '?'}) and it is "
                   f"still missing {what}. Likely cause: {cause}")
        return JobFailed(source="worker:catalog", stamp=status.stamp, correlation_id=status.set_id,
                         event_id=notice_id(status.stamp, status.set_id, EXPIRED), payload=JobFailedPayload(
                             worker="catalog", failed_event_id=None, failed_event_type="backup-due",
                             error_class="BackupSetExpired", message=message[:4000], attempts=1,
                             will_retry=False, hint=fix[:2000], severity="error"))

    # ---- dead letters ----------------------------------------------------------------------------
    def job_failed(self, event: JobFailed) -> list[Envelope]:
        """A final failure of another worker's job for a planned, unfinished set fails the set at once."""
        p = event.payload
        if p.worker in NOT_SET_JOBS or p.will_retry or p.severity != "error":
            return []
        stamp, set_id = event.stamp, event.correlation_id
        if read_plan(self.store.backend, stamp, set_id) is None:
            return []
        status = next((s for s in stamp_sets(self.store.backend, stamp, self.retention.deadline_for)
                       if s.set_id == set_id), None)
        if status is None or status.state not in OPEN_STATES:
            log.info("%s dead-lettered %s for %s/%s, which is already %s: recorded nothing", p.worker,
                     p.failed_event_type, stamp, set_id, status.state if status else "gone")
            return []
        component = COMPONENT_OF.get(p.worker, f"an artifact ({p.worker} worker)")
        reason = (f"the {p.worker} worker dead-lettered {p.failed_event_type or 'a message'} for this set after "
                  f"{p.attempts} attempt(s): {p.error_class}: {p.message}")
        fix = (f"{p.hint} Then replay the dead letter (`appsvc-dr dlq replay {p.worker}`): the set completes late "
               f"when its artifact arrives; or request a new set (`appsvc-dr publish backup-due --stamp {stamp}`).")
        body = {"failed_at": datetime.now(timezone.utc).isoformat(), "component": component, "worker": p.worker,
                "error_class": p.error_class, "caused_by": str(event.event_id), "reason": reason[:4000],
                "hint": fix[:2000], "dead_letter_queue": p.dead_letter_queue, "writer": self.writer}
        if write_terminal(self.store.backend, stamp, set_id, FAILED, body) is None:
            return []
        self.scan(stamp)
        log.error("backup set %s/%s FAILED: %s. How to fix: %s", stamp, set_id, reason, fix)
        return [event.follow_up(JobFailed, JobFailedPayload(
            worker="catalog", failed_event_id=p.failed_event_id, failed_event_type=p.failed_event_type,
            error_class="BackupSetFailed",
            message=f"backup set {stamp}/{set_id} failed: {component} is missing because {reason}"[:4000],
            attempts=p.attempts, will_retry=False, hint=fix[:2000], dead_letter_queue=p.dead_letter_queue,
            severity="error"), source="worker:catalog", event_id=notice_id(stamp, set_id, FAILED))]
