"""The secrets worker.

secrets-rotated → read the dropped SystemSecrets.json (SMB or local) → store it encrypted as a new version
(duplicates are recorded, not stored) → delete the plaintext drop → secrets-stored (+ backup-due).
backup-due naming secrets → link the latest version into the backup set (an encrypted reference artifact).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from datetime import datetime

from contracts import (BackupDue, BackupDuePayload, Envelope, SecretsRotated, SecretsStored, SecretsStoredPayload,
                       new_backup_set_id)
from contracts.events.backup import Component
from workers.artifacts.setmanifest import artifact_key, write_manifest
from workers.artifacts.events import artifact_stored
from workers.artifacts.service import ArtifactStore
from workers.artifacts.sets import require_planned
from workers.artifacts.settings import RetentionSettings, VerifyMode
from workers.middleware.metrics import Metrics
from workers.runtime.errors import ConfigurationError, DrError, PermanentError
from workers.runtime.worker import JobContext, WorkerSpec
from workers.secrets.drop import locate_drop
from workers.secrets.reader import HINT_EXPORT, read_secrets
from workers.secrets.settings import SecretsSettings
from workers.secrets.versions import (REFERENCE_NAME, ROTATED_AT_FORMAT, SecretsVersion, check_rotated_at, latest,
                                      version_id, version_key, versions)
from workers.storage.settings import EncryptionSettings, StagingSettings, StoreSettings
from workers.storage.staged import Staged

log = logging.getLogger("appsvc_dr.secrets")

WORKER = "secrets"
SOURCE = f"worker:{WORKER}"


class SecretsHandler:
    def __init__(self, secrets: SecretsSettings, staging: StagingSettings, retention: RetentionSettings,
                 store: ArtifactStore, *, components: tuple[Component, ...], metrics: Metrics | None = None) -> None:
        self.secrets, self.staging, self.retention = secrets, staging, retention
        self.store, self.components, self.metrics = store, components, metrics or Metrics()
        self._times: dict[tuple[int, str], float] = {}   # (gauge, stamp) -> the newest time it was set to

    def _newest(self, gauge, stamp: str, value: float) -> None:
        """Set a timestamp gauge of ``stamp`` to ``value`` unless it shows a newer time already (redeliveries of
        an older rotation never move it back)."""
        key = (id(gauge), stamp)
        if value >= self._times.get(key, float("-inf")):
            self._times[key] = value
            gauge.labels(stamp).set(value)

    def rotated(self, event: SecretsRotated, ctx: JobContext) -> list[Envelope]:
        p = event.payload
        check_rotated_at(p.rotated_at)
        self._newest(self.metrics.secrets_rotation_seen, event.stamp, p.rotated_at.timestamp())
        with locate_drop(p.drop_path, self.secrets, self.staging) as located:
            results = self._rotate(event, ctx, located)
        self._newest(self.metrics.secrets_rotation_handled, event.stamp, p.rotated_at.timestamp())
        return results

    def _rotate(self, event: SecretsRotated, ctx: JobContext, located: Staged) -> list[Envelope]:
        p, cfg, (drop, drop_key) = event.payload, self.secrets, located
        try:
            data, fingerprint = read_secrets(drop, drop_key, p.drop_path, cfg.max_size)
        except PermanentError:
            done = self._already_stored(event)
            if done is None or drop.exists(drop_key):
                raise
            ctx.logger.info("drop file already removed by an earlier delivery; re-emitting its result")
            return self._results(event, done, duplicate=False, drop_deleted=True)
        vid = version_id(p.rotated_at, fingerprint)
        newest = latest(self.store, event.stamp)
        duplicate = newest is not None and newest.fingerprint == fingerprint and newest.version_id != vid
        if duplicate:
            version = newest
            ctx.logger.info("secrets unchanged since version %s: nothing new stored", newest.version_id)
        else:
            stored = self.store.put(version_key(event.stamp, vid), lambda: _bytes(data), known_sha256=fingerprint,
                                    require_encryption=True)
            version = SecretsVersion(event.stamp, vid, stored)
            ctx.logger.info("stored secrets version %s (encrypted, verified)", vid)
        deleted = False
        if cfg.delete_drop:
            drop.delete(drop_key)
            deleted = True
        self.metrics.secrets_rotations.labels(event.stamp, "duplicate" if duplicate else "stored").inc()
        return self._results(event, version, duplicate=duplicate, drop_deleted=deleted)

    def publish_newest(self, stamp: str) -> None:
        """Set the newest-version gauge from the store (at start, so the age survives restarts)."""
        try:
            newest = latest(self.store, stamp)
        except DrError as exc:
            log.warning("cannot read secrets versions of %s at start: %s", stamp, exc.message)
            return
        if newest is not None:
            self.metrics.secrets_newest.labels(stamp).set(newest.rotated_at.timestamp())

    def _already_stored(self, event: SecretsRotated) -> SecretsVersion | None:
        prefix = f"{event.payload.rotated_at:{ROTATED_AT_FORMAT}}-"
        return next((v for v in reversed(versions(self.store, event.stamp)) if v.version_id.startswith(prefix)),
                    None)

    def _results(self, event: SecretsRotated, version: SecretsVersion, *, duplicate: bool,
                 drop_deleted: bool) -> list[Envelope]:
        self.publish_newest(event.stamp)
        out: list[Envelope] = [event.follow_up(SecretsStored, SecretsStoredPayload(
            version_id=version.version_id, key=version.artifact.key, fingerprint=version.fingerprint,
            stored_at=datetime.fromisoformat(version.artifact.stored_at), rotated_at=event.payload.rotated_at, duplicate=duplicate,
            drop_deleted=drop_deleted), source=SOURCE)]
        if not duplicate and self.secrets.trigger_backup:
            set_id = new_backup_set_id()
            out.append(event.follow_up(BackupDue, BackupDuePayload(
                backup_set_id=set_id, components=self.components, reason="secrets-rotated",
                requested_by=SOURCE), source=SOURCE,
                correlation_id=set_id))
        return out

    def backup_due(self, event: BackupDue, ctx: JobContext) -> list[Envelope]:
        if "secrets" not in event.payload.components:
            return []
        require_planned(self.store.backend, event, self.retention.set_deadline)  # retry until planned
        newest = latest(self.store, event.stamp)
        if newest is None:
            raise PermanentError(f"no SystemSecrets.json has been stored for stamp {event.stamp} yet, so backup "
                                 f"set {event.correlation_id} cannot include secrets", hint=HINT_EXPORT)
        started = time.monotonic()
        reference = json.dumps({"stamp": event.stamp, "version_id": newest.version_id, "key": newest.artifact.key,
                                "fingerprint": newest.fingerprint}, sort_keys=True).encode()
        key = artifact_key(event.stamp, event.correlation_id, "secrets", REFERENCE_NAME)
        # deterministic content: a redelivery finds the identical reference already stored and keeps it
        stored = self.store.put(key, lambda: _bytes(reference), require_encryption=True)
        write_manifest(self.store, event.stamp, event.correlation_id)
        ctx.logger.info("backup set %s uses secrets version %s", event.correlation_id, newest.version_id)
        return [artifact_stored(event, stored, store=self.store.backend.name, component="secrets",
                                name=REFERENCE_NAME, duration=time.monotonic() - started, source=SOURCE)]


def _bytes(data: bytes) -> contextlib.nullcontext:
    return contextlib.nullcontext(io.BytesIO(data))


SPEC = WorkerSpec(WORKER, {SecretsRotated: SecretsHandler.rotated, BackupDue: SecretsHandler.backup_due})


def build_secrets_worker(*, secrets: SecretsSettings, store: StoreSettings, encryption: EncryptionSettings,
                         verify: VerifyMode, staging: StagingSettings, retention: RetentionSettings, stamp: str,
                         components: tuple[Component, ...], metrics: Metrics | None = None) -> WorkerSpec:
    """The ``secrets`` worker, storing with ``verify`` (the upload section's mode); it first publishes the newest
    stored version of ``stamp``."""
    if encryption.certificate is None:
        raise ConfigurationError("the secrets worker refuses to start without an encryption certificate: "
                                 "SystemSecrets.json is never stored in plaintext",
                                 hint="Set APPSVC_DR_ENCRYPTION__CERTIFICATE to a PEM certificate "
                                      "(`appsvc-dr keys create` makes one; keep its private key off the stamp).")
    artifacts = ArtifactStore.from_settings(store, encryption, verify=verify)
    handler = SecretsHandler(secrets, staging, retention, artifacts, components=components, metrics=metrics)
    handler.publish_newest(stamp)
    return SPEC.bind(handler, on_shutdown=artifacts.close)                        # logs off an SMB store
