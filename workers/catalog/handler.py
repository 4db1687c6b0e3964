"""The catalog worker: keeps each backup set's plan, manifest and completion marker; applies retention.

* ``backup-due`` → ``<stamp>/<set>/plan.json`` (requested components, reason, requested_at), written once;
  components this site does not back up are left out and reported (see :mod:`workers.catalog.unserved`).
* ``artifact-stored`` → ``manifest.json`` rewritten; when the set is complete and not yet marked →
  ``complete.json`` (written once) → a ``backup-set-completed`` follow-up, then retention for the stamp
  when ``retention.auto`` is on.
  Retention deletions are logged at WARNING; each incomplete set it deletes is told to the operator with a
  ``job-failed`` warning (see :mod:`workers.catalog.deleted`), and the file-share snapshots of deleted sets are
  forgotten with them (no orphan snapshot).
* ``job-failed`` (final, from another worker) → the set ``failed``; on a timer, open sets past their deadline →
  ``expired`` (see :mod:`workers.catalog.lifecycle`); a late artifact still completes either (logged as late).
  Recovery-point metrics per stamp come from the store (:mod:`workers.catalog.rpo`).
* ``backup-set-completed`` → one audit log line (the event must be routable; this is its consumer).
* ``database-backed-up`` with ``skipped_reason`` → a skip note in the set and one ``job-failed`` warning for
  the operator (see :mod:`workers.catalog.skips`); the set keeps waiting for that database.

Completeness: every component of the plan has at least one artifact record (or ``expected[component]``
many, when a producer fills in the plan's optional ``expected`` map), as the store shows them. A set exists
only when planned: ``artifact-stored`` for a set without ``plan.json`` is retried (its ``backup-due`` may still
be queued behind) and dead-lettered once the set deadline (``RETENTION__SET_DEADLINE``) has passed. Note that ``databases`` stores one artifact per database: without ``expected`` the set completes with the
first one, and later artifacts only update the manifest.

Idempotency: the marker records the ``artifact-stored`` event that completed the set. A redelivery of that
same event re-emits ``backup-set-completed`` (with the same, deterministic event id) and re-applies
retention; any other event for a marked set emits nothing. Two catalog replicas racing on the same set may
both emit the event (same event id, so consumers can deduplicate).
"""
from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone

from contracts import (ArtifactMirrored, ArtifactStored, BackupDue, BackupSetCompleted, BackupSetCompletedPayload,
                       DatabaseBackedUp, Envelope, FileshareSynced, JobFailed, SecretsStored)
from contracts.events.backup import ALL_COMPONENTS, Component
from workers.artifacts.setmanifest import write_manifest
from workers.artifacts.functionspacks import describe as describe_functions, prune_functions
from workers.artifacts.retention import apply_retention
from workers.artifacts.service import ArtifactStore
from workers.artifacts.sets import (EXPIRED_FILE, FAILED_FILE, Plan, is_complete, read_marker, read_plan, read_skips,
                                    require_planned, set_prefix, waiting_for,
                                    write_marker, write_plan)
from workers.artifacts.settings import RetentionSettings
from workers.catalog.deleted import deleted_warnings, forget_snapshots_of
from workers.catalog.lifecycle import Lifecycle, remember_stamp
from workers.catalog.rpo import NewestSecrets, SecretsAge, SetMetrics
from workers.catalog.skips import record_skip
from workers.catalog.unserved import split as unserved_split
from workers.catalog.unserved import warning as unserved_warning
from workers.engines.settings import DatabaseSettings
from workers.middleware.metrics import Metrics
from workers.repository.forget import Policy, forget
from workers.repository.repo import Repository
from workers.runtime.errors import DrError
from workers.runtime.worker import JobContext, WorkerSpec
from workers.storage.factory import build_store
from workers.storage.settings import EncryptionSettings, StoreSettings
from workers.storage.signing import attach, trust_from_settings

WORKER = "catalog"
log = logging.getLogger("appsvc_dr.catalog")
_COMPLETED_IDS = uuid.UUID("6f1c7d52-8a57-4a43-9d0e-3c9b51f0c0de")


def completion_event_id(stamp: str, set_id: str) -> uuid.UUID:
    """The one event id every ``backup-set-completed`` of a set carries (consumers deduplicate on it)."""
    return uuid.uuid5(_COMPLETED_IDS, f"{stamp}/{set_id}")


class CatalogHandler:
    def __init__(self, retention: RetentionSettings, store: ArtifactStore, databases: int | None = None,
                 components: tuple[str, ...] | None = None, lifecycle: Lifecycle | None = None) -> None:
        self.retention, self.store = retention, store
        self.databases = databases  # artifacts the databases component must have (one per configured database)
        self.components = components  # what this site backs up (None: everything)
        self.lifecycle = lifecycle or Lifecycle(retention, store)   # failed / expired sets, set metrics
        self.secrets_age: SecretsAge | None = None

    @property
    def backend(self):
        return self.store.backend

    # ---- backup-due ------------------------------------------------------------------------------
    def backup_due(self, event: BackupDue, ctx: JobContext) -> list[Envelope]:
        p = event.payload
        served, unserved = unserved_split(tuple(p.components), self.components)
        if not served:
            ctx.logger.warning("backup set %s/%s: nothing asked for is backed up here (%s); no plan written",
                               event.stamp, event.correlation_id, ", ".join(unserved))
            return [unserved_warning(event, unserved, self.components or (), planned=False)]
        plan = Plan(stamp=event.stamp, backup_set_id=event.correlation_id, components=served,
                    reason=p.reason, requested_at=event.occurred_at, requested_by=p.requested_by,
                    event_id=str(event.event_id),
                    expected={"databases": self.databases} if self.databases and "databases" in served
                    else None, unserved=unserved)
        self.lifecycle.stamps.add(event.stamp)
        remember_stamp(self.backend, event.stamp)
        if write_plan(self.backend, plan):
            ctx.logger.info("planned backup set %s/%s: %s (%s)", event.stamp, event.correlation_id,
                            ", ".join(plan.components), plan.reason)
        else:
            ctx.logger.info("backup set %s/%s already has a plan; kept as it is", event.stamp, event.correlation_id)
            plan = read_plan(self.backend, event.stamp, event.correlation_id) or plan
        if plan.unserved and plan.event_id == str(event.event_id):
            ctx.logger.warning("backup set %s/%s planned without %s: not backed up at this site", event.stamp,
                               event.correlation_id, ", ".join(plan.unserved))
            return [unserved_warning(event, plan.unserved, self.components or (), planned=True)]
        return []

    # ---- artifact-stored -------------------------------------------------------------------------
    def artifact_stored(self, event: ArtifactStored, ctx: JobContext) -> list[Envelope]:
        stamp, set_id = event.stamp, event.correlation_id
        plan = self._require_plan(event)
        backup_set = write_manifest(self.store, stamp, set_id)
        marker = read_marker(self.backend, stamp, set_id)
        if marker is None:
            if not is_complete(plan, backup_set):
                waiting = waiting_for(plan, backup_set, read_skips(self.backend, stamp, set_id))
                ctx.logger.info("backup set %s/%s: %d artifact(s), waiting: %s", stamp, set_id,
                                len(backup_set.artifacts), "; ".join(waiting) or "nothing")
                return []
            marker = self._marker(event, plan, backup_set)
            if not write_marker(self.backend, stamp, set_id, marker):
                marker = read_marker(self.backend, stamp, set_id) or marker   # another replica was first
            self._tell_if_late(stamp, set_id, ctx)
            self.lifecycle.scan(stamp)
        if marker.get("caused_by") != str(event.event_id):
            ctx.logger.info("backup set %s/%s is already complete; manifest updated (%d artifacts)", stamp,
                            set_id, len(backup_set.artifacts))
            return []
        completed = event.follow_up(BackupSetCompleted, BackupSetCompletedPayload(
            components=tuple(marker["components"]), artifacts=int(marker["artifacts"]),
            stored_bytes=int(marker["stored_bytes"]),
            completed_at=datetime.fromisoformat(marker["completed_at"])),
            source=f"worker:{WORKER}", event_id=completion_event_id(stamp, set_id))
        ctx.logger.info("backup set %s/%s complete: %s, %d artifact(s), %d bytes", stamp, set_id,
                        ", ".join(marker["components"]), marker["artifacts"], marker["stored_bytes"])
        return [completed, *self._apply_retention(event, ctx)]

    def _tell_if_late(self, stamp: str, set_id: str, ctx: JobContext) -> None:
        for name in (EXPIRED_FILE, FAILED_FILE):
            if self.backend.exists(set_prefix(stamp, set_id) + name):
                ctx.logger.warning("backup set %s/%s completed LATE: it was recorded %s before its last artifact "
                                   "arrived; it is a complete recovery point now", stamp, set_id,
                                   name.removesuffix(".json"))

    @staticmethod
    def _marker(event: ArtifactStored, plan: Plan | None, backup_set) -> dict:
        present = backup_set.components
        return {"stamp": event.stamp, "backup_set_id": event.correlation_id,
                "completed_at": datetime.now(timezone.utc).isoformat(),
                "requested_at": plan.requested_at.isoformat() if plan and plan.requested_at else None,
                "planned": list(plan.components) if plan else None,
                "components": [c for c in ALL_COMPONENTS if c in present],
                "artifacts": len(backup_set.artifacts), "stored_bytes": backup_set.size,
                "caused_by": str(event.event_id),
                "event_id": str(completion_event_id(event.stamp, event.correlation_id))}

    def _apply_retention(self, event: Envelope, ctx: JobContext) -> list[Envelope]:
        """Retention for the event's stamp; returns the warnings for the incomplete sets it deleted."""
        r, stamp = self.retention, event.stamp
        if not r.auto:
            return []
        plan = apply_retention(self.backend, stamp, keep_last=r.keep_last, keep_within=r.keep_within,
                               incomplete_grace=r.grace)
        if plan.delete:
            ctx.logger.warning("retention for %s deleted %d set(s) (%d objects): %s; kept %d", stamp, len(plan.delete),
                               plan.deleted_objects, "; ".join(f"{s} ({plan.reasons[s]})" for s in plan.delete),
                               len(plan.keep))
            forgotten = forget_snapshots_of(Repository(self.store, stamp), plan.delete)
            if forgotten:
                ctx.logger.info("retention for %s forgot %d file-share snapshot(s) of the deleted sets (%s); their "
                                "data is freed by `appsvc-dr snapshots prune` (needs the private key)", stamp,
                                len(forgotten), ", ".join(forgotten))
        else:
            ctx.logger.info("retention for %s: nothing to delete, kept %d set(s)", stamp, len(plan.keep))
        snapshots = forget(Repository(self.store, stamp), Policy(keep_last=r.keep_last, keep_within=r.keep_within))
        if snapshots.forget:
            ctx.logger.info("retention for %s forgot %d file-share snapshot(s) (%s), kept %d; their data is freed by "
                            "`appsvc-dr snapshots prune` (needs the private key)", stamp, len(snapshots.forget),
                            ", ".join(snapshots.forget), len(snapshots.keep))
        packs = prune_functions(self.store, stamp, grace=r.grace)   # no private key needed: indexes are plain
        for line in describe_functions(packs):
            (ctx.logger.warning if "KEPT" in line else ctx.logger.info)("retention for %s: %s", stamp, line)
        return deleted_warnings(event, plan)

    # ---- backup-set-completed --------------------------------------------------------------------
    def backup_set_completed(self, event: BackupSetCompleted, ctx: JobContext) -> list[Envelope]:
        p = event.payload
        ctx.logger.info("audit: backup set %s/%s completed at %s: %s, %d artifact(s), %d bytes", event.stamp,
                        event.correlation_id, p.completed_at.isoformat(), ", ".join(p.components), p.artifacts,
                        p.stored_bytes)
        return []


    # ---- audit of the other workers' results ----------------------------------------------------------
    def audit(self, event: Envelope, ctx: JobContext) -> list[Envelope]:
        """secrets-stored, database-backed-up, ...: one audit line each (they must be routable)."""
        ctx.logger.info("audit: %s from %s for %s/%s: %s", event.type, event.source, event.stamp,
                        event.correlation_id, event.payload.model_dump_json())
        return []

    def job_failed(self, event: JobFailed, ctx: JobContext) -> list[Envelope]:
        """A dead-lettered job of another worker fails its set at once (see :mod:`workers.catalog.lifecycle`)."""
        return self.lifecycle.job_failed(event)

    def check_deadlines(self) -> list[Envelope]:
        """The timer: sets past their deadline expire (one notification each)."""
        return self.lifecycle.check()

    def secrets_stored(self, event: SecretsStored, ctx: JobContext) -> list[Envelope]:
        """An audit line; the newest-secrets gauge follows the store."""
        self.audit(event, ctx)
        if self.secrets_age is not None:
            self.secrets_age.refresh(event.stamp)
        return []

    def database_backed_up(self, event: DatabaseBackedUp, ctx: JobContext) -> list[Envelope]:
        """An audit line; a skipped database is recorded in its set and told to the operator once."""
        self.audit(event, ctx)
        if not event.payload.skipped_reason:
            return []
        self._require_plan(event)      # a skip note is written into the set: only into a planned one
        return record_skip(self.store, event, ctx)

    def _require_plan(self, event: Envelope) -> Plan:
        return require_planned(self.backend, event, self.retention.set_deadline)


SPEC = WorkerSpec(WORKER, {BackupDue: CatalogHandler.backup_due, ArtifactStored: CatalogHandler.artifact_stored,
                           BackupSetCompleted: CatalogHandler.backup_set_completed,
                           SecretsStored: CatalogHandler.secrets_stored, FileshareSynced: CatalogHandler.audit,
                           DatabaseBackedUp: CatalogHandler.database_backed_up,
                           JobFailed: CatalogHandler.job_failed,
                           ArtifactMirrored: CatalogHandler.audit},           # the mirror worker's results
                  concurrency=1, prefetch=20)  # quick jobs: small JSON files


def build_catalog_worker(*, retention: RetentionSettings, store: StoreSettings, encryption: EncryptionSettings,
                         database: DatabaseSettings, components: tuple[Component, ...], stamp: str | None = None,
                         metrics: Metrics | None = None, newest_secrets: NewestSecrets | None = None) -> WorkerSpec:
    """The ``catalog`` worker. It only reads records and writes small JSON files: no certificate needed.
    Its timer expires sets past their deadline; ``metrics`` get the recovery-point gauges, rebuilt from the
    store at start (see :mod:`workers.catalog.rpo`), and the newest secrets version read by ``newest_secrets``."""
    artifacts = ArtifactStore(attach(build_store(store), trust_from_settings(encryption)))
    lifecycle = Lifecycle(retention, artifacts, stamps=(stamp,) if stamp else ())
    handler = CatalogHandler(retention, artifacts,        # signs plans and markers, checks what it reads
                             databases=len(database.databases), components=tuple(components), lifecycle=lifecycle)
    if metrics is not None:
        lifecycle.observers.append(SetMetrics(metrics.registry, retention.rpo_objective.total_seconds()))
        if newest_secrets is not None:
            handler.secrets_age = SecretsAge(metrics.secrets_newest, newest_secrets, artifacts)

    def start() -> None:      # the metrics from the store, before the first event or tick
        try:
            for known in lifecycle.known_stamps():
                lifecycle.scan(known)
                if handler.secrets_age is not None:
                    handler.secrets_age.refresh(known)
        except DrError as exc:  # the store may come back: the timer scans again, events still get handled
            log.warning("cannot read the backup sets at start (%s); the recovery-point metrics follow with the "
                        "next check. How to fix: %s", exc.message, exc.hint)

    return SPEC.bind(handler, on_start=start, on_shutdown=artifacts.close, on_timer=handler.check_deadlines,
                     timer_interval=retention.set_check_interval.total_seconds())
