"""The file-share worker: ``backup-due`` (when it names the file share) or ``fileshare-sync-requested`` →
incremental snapshot → ``fileshare-synced`` + ``artifact-stored`` (the set's ``fileshare/snapshot.json``
reference, so the catalog counts the component) [+ a warning ``job-failed`` when the snapshot is partial: files
were skipped, or stored while still changing (unstable); each is named].

Idempotent: the snapshot id derives from the backup set (and sub-path); a redelivered event whose snapshot
is complete re-emits the stored result, and one arriving while another event's sync of that snapshot runs is a
duplicate (acked, counted: see ``workers.artifacts.jobs``). An interrupted snapshot resumes: its packs are
indexed as they are stored, so the next attempt finds those blobs and uploads only the rest.
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path

from contracts import BackupDue, Envelope, FileshareSynced, FileshareSyncedPayload, FileshareSyncRequested, \
    JobFailed, JobFailedPayload
from workers.artifacts.setmanifest import artifact_key, write_manifest
from workers.artifacts.events import artifact_stored
from workers.artifacts.jobs import JobKey, JobLease, follow_up, store_prefix
from workers.artifacts.service import ArtifactStore
from workers.artifacts.sets import require_planned
from workers.artifacts.settings import RetentionSettings, VerifyMode
from workers.fileshare.opener import open_tree
from workers.fileshare.settings import FileshareSettings
from workers.fileshare.sync import Sync, SyncResult
from workers.repository.lock import RepoLock
from workers.repository.repo import Repository
from workers.runtime.errors import PermanentError, TransientError
from workers.runtime.worker import JobContext, WorkerSpec
from workers.storage.settings import EncryptionSettings, StoreSettings

WORKER = "fileshare"
SKIPPED_HINT = ("Files in use (or denied) were skipped after {retries} retries {wait:g}s apart (robocopy /R /W); "
                "they are tried again on the next sync. Close what holds them or schedule the backup when they "
                "are free. Set APPSVC_DR_FILESHARE__FAIL_ON_SKIPPED=true to fail the job instead.")
UNSTABLE_HINT = ("Files still being written were stored as last read after {reread} re-reads (marked unstable in "
                 "the manifest; they are read again on the next sync). Schedule the backup when the sites are "
                 "quiet, or raise APPSVC_DR_FILESHARE__REREAD.")


def snapshot_id(set_id: str, sub_path: str | None) -> str:
    """One snapshot per backup set and sub-path (deterministic, so redeliveries find it)."""
    return set_id if not sub_path else f"{set_id}-p{hashlib.sha256(sub_path.encode()).hexdigest()[:8]}"


def reference_name(sub_path: str | None) -> str:
    return "snapshot.json" if not sub_path else f"snapshot-{hashlib.sha256(sub_path.encode()).hexdigest()[:8]}.json"


def commit(repo: Repository, result: SyncResult) -> dict:
    """Store the manifest, then the summary (its presence marks the snapshot complete)."""
    m = result.manifest
    repo.put_manifest(m)
    summary = {**result.stats.as_dict(), "stamp": m.stamp, "backup_set_id": m.backup_set_id, "created_at": m.created_at,
               "manifest_key": repo.manifest_key(m.snapshot_id)}
    repo.put_summary(m.snapshot_id, summary)
    repo.merge_index()
    return summary


def synced_payload(summary: dict) -> FileshareSyncedPayload:
    fields = set(FileshareSyncedPayload.model_fields)
    return FileshareSyncedPayload.model_validate({k: v for k, v in summary.items() if k in fields}, strict=False)


class FileshareHandler:
    def __init__(self, fileshare: FileshareSettings, retention: RetentionSettings, store: ArtifactStore) -> None:
        self.fileshare, self.retention, self.store = fileshare, retention, store

    def backup_due(self, event: BackupDue, ctx: JobContext) -> list[Envelope]:
        if "fileshare" not in event.payload.components:
            return []
        return self._sync(event, None, ctx)

    def sync_requested(self, event: FileshareSyncRequested, ctx: JobContext) -> list[Envelope]:
        return self._sync(event, event.payload.sub_path, ctx)

    def _sync(self, event: Envelope, sub_path: str | None, ctx: JobContext) -> list[Envelope]:
        s = self.fileshare
        if not s.source:
            raise PermanentError("no file share is configured", hint=r"Set APPSVC_DR_FILESHARE__SOURCE to the App "
                                 r"Service file share (\\fileserver\share) and its credentials, or leave "
                                 "'fileshare' out of the backup-due components.")
        require_planned(self.store.backend, event, self.retention.set_deadline)  # retry until planned
        started = time.monotonic()
        repo = Repository(self.store, event.stamp, cache_dir=Path(s.cache_dir))
        sid = snapshot_id(event.correlation_id, sub_path)
        summary = repo.summary(sid)
        if summary is not None:
            ctx.logger.info("snapshot %s is already complete: re-emitting its result", sid)
        else:
            job = JobKey(event.stamp, event.correlation_id, "fileshare", reference_name(sub_path))
            with JobLease(self.store.backend, store_prefix(job), job=ctx.job_key, what=str(job)):  # one sync
                summary = repo.summary(sid) or self._run_sync(repo, event, sid, sub_path, ctx)
        body = json.dumps(summary, sort_keys=True, ensure_ascii=False).encode()
        name = reference_name(sub_path)
        stored = repo.meta.put(artifact_key(event.stamp, event.correlation_id, "fileshare", name),
                               lambda: io.BytesIO(body))
        write_manifest(self.store, event.stamp, event.correlation_id)
        source = f"worker:{WORKER}"
        out: list[Envelope] = [
            follow_up(event, FileshareSynced, synced_payload(summary), source=source),
            artifact_stored(event, stored, store=self.store.backend.name, component="fileshare", name=name,
                            duration=time.monotonic() - started, source=source)]
        if summary["partial"]:
            out.append(self._warning(event, summary, ctx))
        return out

    def _run_sync(self, repo: Repository, event: Envelope, sid: str, sub_path: str | None, ctx: JobContext) -> dict:
        s = self.fileshare
        tree = open_tree(s.source, username=s.username, password=s.password, port=s.port, encrypt=s.encrypt)
        lock = RepoLock(self.store.backend, event.stamp, "sync", holder=f"fileshare worker (snapshot {sid})")
        try:
            with lock:                  # shared: refused while a prune runs (see workers.repository.lock)
                result = Sync(s, repo, tree, progress=ctx.progress, cancelled=ctx.cancelled,
                              logger=ctx.logger).run(sid, event.stamp, event.correlation_id, sub_path)
                if result.stats.skipped_count and s.fail_on_skipped:
                    raise TransientError(f"{result.stats.skipped_count} file(s) could not be read: "
                                         + self._skipped_text(result.stats.as_dict()),
                                         hint=SKIPPED_HINT.format(retries=s.retries, wait=s.wait))
                lock.check()            # a lapsed lock: a prune may have freed blobs this sync reused
                return commit(repo, result)
        finally:
            tree.close()

    @staticmethod
    def _skipped_text(summary: dict) -> str:
        listed = "; ".join(f"{s['path']}: {s['reason']}" for s in summary["skipped"][:10])
        more = summary["skipped_count"] - min(10, len(summary["skipped"]))
        return listed + (f"; and {more} more" if more > 0 else "")

    @staticmethod
    def _unstable_text(summary: dict) -> str:
        paths = summary.get("unstable", [])
        more = summary.get("changed_while_read", 0) - min(10, len(paths))
        return "; ".join(paths[:10]) + (f"; and {more} more" if more > 0 else "")

    def _warning(self, event: Envelope, summary: dict, ctx: JobContext) -> JobFailed:
        s = self.fileshare
        parts, hints = [], []
        if summary["skipped_count"]:
            parts.append(f"{summary['skipped_count']} skipped: {self._skipped_text(summary)}")
            hints.append(SKIPPED_HINT.format(retries=s.retries, wait=s.wait))
        if summary.get("changed_while_read"):
            parts.append(f"{summary['changed_while_read']} unstable (still changing while read, stored as last "
                         f"read): {self._unstable_text(summary)}")
            hints.append(UNSTABLE_HINT.format(reread=s.reread))
        return event.follow_up(JobFailed, JobFailedPayload(
            worker=WORKER, failed_event_id=event.event_id, failed_event_type=event.type,
            error_class="PartialSnapshot",
            message=(f"snapshot {summary['snapshot_id']} of {summary['source']} is partial: "
                     + " | ".join(parts))[:4000],
            attempts=ctx.attempt + 1, will_retry=False, hint=" ".join(hints)[:2000],
            severity="warning"), source=f"worker:{WORKER}")


SPEC = WorkerSpec(WORKER, {BackupDue: FileshareHandler.backup_due,
                           FileshareSyncRequested: FileshareHandler.sync_requested}, concurrency=1)


def build_fileshare_worker(*, fileshare: FileshareSettings, store: StoreSettings, encryption: EncryptionSettings,
                           verify: VerifyMode, retention: RetentionSettings) -> WorkerSpec:
    """The ``fileshare`` worker, storing with ``verify`` (the upload section's mode)."""
    artifacts = ArtifactStore.from_settings(store, encryption, verify=verify)
    handler = FileshareHandler(fileshare, retention, artifacts)
    return SPEC.bind(handler, on_shutdown=artifacts.close)
