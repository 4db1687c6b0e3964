"""The upload worker: artifact-ready → compress + encrypt → store → verify → artifact-stored.

Exactly one upload per artifact (``workers.artifacts.jobs``): an artifact already stored and verified is not
uploaded again (its result is re-emitted and the staged copy removed); another event's upload of it still running
makes this one a duplicate (acked, counted)."""
from __future__ import annotations

import time
from datetime import timedelta

from contracts import ArtifactReady, Envelope
from workers.artifacts.setmanifest import artifact_key, write_manifest
from workers.artifacts.events import artifact_stored
from workers.artifacts.jobs import DEFAULT_TTL, JobKey, JobLease, store_prefix
from workers.artifacts.service import ArtifactStore, StoredArtifact
from workers.artifacts.sets import require_planned
from workers.artifacts.settings import RetentionSettings
from workers.runtime.errors import PermanentError
from workers.runtime.worker import JobContext, WorkerSpec
from workers.storage.settings import EncryptionSettings, StagingSettings, StoreSettings
from workers.storage.staged import Staged, locate, staging_roots
from workers.upload.settings import UploadSettings

WORKER = "upload"


class UploadHandler:
    def __init__(self, staging: StagingSettings, retention: RetentionSettings, store: ArtifactStore, *,
                 lease_ttl: timedelta = DEFAULT_TTL) -> None:
        self.staging, self.retention, self.store, self.lease_ttl = staging, retention, store, lease_ttl
        # bytes per target kind: appsvc_dr_bytes_processed_total{kind="uploaded-s3|uploaded-smb|uploaded-file"}
        self.counter = f"uploaded-{store.backend.name.split(':', 1)[0]}"

    def __call__(self, event: ArtifactReady, ctx: JobContext) -> list[Envelope]:
        p = event.payload
        with locate(p.staged_path, self.staging, staging_roots(self.staging)) as staged:
            return self._upload(event, ctx, staged)

    def _upload(self, event: ArtifactReady, ctx: JobContext, located: Staged) -> list[Envelope]:
        p, (staged, staged_key) = event.payload, located
        key = artifact_key(event.stamp, event.correlation_id, p.component, p.name)
        require_planned(self.store.backend, event, self.retention.set_deadline)  # planned sets only
        started = time.monotonic()
        stored = self.store.stored(key)           # done already (a re-published or redelivered request)?
        if stored is None:
            job = JobKey(event.stamp, event.correlation_id, p.component, p.name)
            with JobLease(self.store.backend, store_prefix(job), job=ctx.job_key, what=str(job), ttl=self.lease_ttl):
                stored = self.store.stored(key) or self._put(event, ctx, located, key)
        elif p.sha256 and p.sha256 != stored.plaintext_sha256:
            ctx.logger.warning("%s is already stored; the staged copy %s is another backup of it and is discarded",
                               key, p.staged_path)
        write_manifest(self.store, event.stamp, event.correlation_id)
        if p.delete_staged:
            staged.delete(staged_key)
        ctx.logger.info("stored %s (%d → %d bytes%s)", key, stored.plaintext_size, stored.stored_size,
                        ", already stored: nothing uploaded" if stored.deduplicated else "")
        return [artifact_stored(event, stored, store=self.store.backend.name, component=p.component, name=p.name,
                                duration=time.monotonic() - started, source=f"worker:{WORKER}")]

    def _put(self, event: ArtifactReady, ctx: JobContext, located: Staged, key: str) -> StoredArtifact:
        p, (staged, staged_key) = event.payload, located
        stored = self.store.put(key, lambda: staged.open(staged_key), known_sha256=p.sha256,
                                require_encryption=p.component == "secrets",
                                progress=lambda n: ctx.progress(self.counter, n), metadata=p.metadata,
                                hash_head=p.component == "databases")   # restored while downloaded
        if p.size is not None and stored.plaintext_size != p.size:
            raise PermanentError(f"staged file {p.staged_path} has {stored.plaintext_size} bytes, the event "
                                 f"says {p.size}", hint="The producer staged an incomplete file; re-run its "
                                                        "backup, then replay.")
        return stored


SPEC = WorkerSpec(WORKER, {ArtifactReady: UploadHandler.__call__}, concurrency=2)


def build_upload_worker(*, upload: UploadSettings, store: StoreSettings, encryption: EncryptionSettings,
                        staging: StagingSettings, retention: RetentionSettings) -> WorkerSpec:
    artifacts = ArtifactStore.from_settings(store, encryption, verify=upload.verify)
    return SPEC.bind(UploadHandler(staging, retention, artifacts), on_shutdown=artifacts.close)  # logs off SMB
