"""The ``functions`` worker: ``backup-due`` naming ``functions`` → each configured storage account copied into
the set (:mod:`workers.functions.backup`) → one ``artifact-stored`` per account (its manifest, so the catalog
counts the component) + ``functions-backed-up`` [+ a warning ``job-failed`` when a queue held more messages than
a peek copies].

Idempotent: an account whose summary for this set exists is not copied again; its result is re-emitted."""
from __future__ import annotations

import time

from contracts import BackupDue, Envelope, FunctionsBackedUp, FunctionsBackedUpPayload, JobFailed, \
    JobFailedPayload
from contracts.events.functions import FunctionsAccountResult
from workers.artifacts.events import artifact_stored
from workers.artifacts.service import ArtifactStore
from workers.artifacts.setmanifest import write_manifest
from workers.artifacts.sets import require_planned
from workers.artifacts.settings import RetentionSettings, VerifyMode
from workers.functions.backup import backup_account, summary_key
from workers.functions.layout import COMPONENT, read_json
from workers.functions.settings import FunctionsSettings
from workers.runtime.errors import PermanentError
from workers.runtime.worker import JobContext, WorkerSpec
from workers.storage.settings import EncryptionSettings, StoreSettings

WORKER = "functions"
PEEK_HINT = ("A queue held more messages than a peek returns (32 per queue): the rest are not in the copy. Set "
             "APPSVC_DR_FUNCTIONS__QUEUE_COPY=receive to copy every message (each copied message's dequeue count "
             "goes up by one and it is hidden from the Function App while its queue is copied), or drain the "
             "queue (stop the producers) before the backup.")

REFUSED_HINT = ("Some blobs, messages or entities hold what a restore refuses (e.g. a content setting longer than "
                "1,024 characters, a metadata name that is not a C# identifier): they are named in the backup's "
                "functions-backed-up event and left out of the copy, so the rest restores. Fix or remove them in "
                "the storage account (or copy them by hand, e.g. with azcopy), then run a backup again.")


class FunctionsHandler:
    def __init__(self, functions: FunctionsSettings, retention: RetentionSettings, store: ArtifactStore) -> None:
        self.functions, self.retention, self.store = functions, retention, store
        self.meta = ArtifactStore(store.backend, certificate=None, compress=store.compress, level=store.level,
                                  verify=store.verify_mode)

    def backup_due(self, event: BackupDue, ctx: JobContext) -> list[Envelope]:
        if COMPONENT not in event.payload.components:
            return []
        if not self.functions.accounts:
            raise PermanentError("no Function Apps storage account is configured",
                                 hint="Set APPSVC_DR_FUNCTIONS__ACCOUNTS (a JSON list of {name, connection_string "
                                      "| account_key | sas_token}), or leave 'functions' out of "
                                      "APPSVC_DR_COMPONENTS.")
        require_planned(self.store.backend, event, self.retention.set_deadline)
        started = time.monotonic()
        out: list[Envelope] = []
        results = []
        for account in self.functions.accounts:
            one = time.monotonic()
            summary = read_json(self.meta, summary_key(event.stamp, account.name, event.correlation_id))
            if summary is None:
                summary = backup_account(self.functions, self.store, self.meta, account, event.stamp,
                                         event.correlation_id, logger=ctx.logger)
            else:
                ctx.logger.info("account %s is already in set %s: re-emitting", account.name, event.correlation_id)
            results.append(FunctionsAccountResult.model_validate(   # a stored summary's lists are JSON arrays
                {**summary, "queues_partial": tuple(summary.get("queues_partial") or ()),
                 "refused": tuple(summary.get("refused") or ())}))
            stored = self.store.record(summary["manifest_key"], required=False)
            if stored is None:
                raise PermanentError(f"the manifest of account {account.name} has no record",
                                     hint="The store lost an object just written; check the store and retry.")
            out.append(artifact_stored(event, stored, store=self.store.backend.name, component=COMPONENT,
                                       name=f"{account.name}.jsonl", duration=time.monotonic() - one,
                                       source=f"worker:{WORKER}"))
        write_manifest(self.store, event.stamp, event.correlation_id)
        partial = any(r.messages_not_copied or r.items_refused for r in results)
        out.insert(0, event.follow_up(FunctionsBackedUp, FunctionsBackedUpPayload(
            accounts=tuple(results), partial=partial, duration_seconds=round(time.monotonic() - started, 3)),
            source=f"worker:{WORKER}"))
        if any(r.messages_not_copied for r in results):
            missed = "; ".join(f"account {r.account}: {', '.join(r.queues_partial)} messages copied"
                               for r in results if r.messages_not_copied)
            out.append(self._warning(event, ctx, "PartialQueueCopy", f"queue messages not all copied: {missed}",
                                     PEEK_HINT))
        if any(r.items_refused for r in results):
            left = "; ".join(f"account {r.account}: {r.items_refused} item(s), e.g. {', '.join(r.refused[:3])}"
                             for r in results if r.items_refused)
            out.append(self._warning(event, ctx, "ItemsNotRestorable", f"left out of the copy: {left}",
                                     REFUSED_HINT))
        return out


    @staticmethod
    def _warning(event: BackupDue, ctx: JobContext, error_class: str, message: str, hint: str) -> Envelope:
        return event.follow_up(JobFailed, JobFailedPayload(
            worker=WORKER, failed_event_id=event.event_id, failed_event_type=event.type, error_class=error_class,
            message=message[:4000], attempts=ctx.attempt + 1, will_retry=False, hint=hint, severity="warning"),
            source=f"worker:{WORKER}")


SPEC = WorkerSpec(WORKER, {BackupDue: FunctionsHandler.backup_due}, concurrency=1)


def build_functions_worker(*, functions: FunctionsSettings, store: StoreSettings, encryption: EncryptionSettings,
                           verify: VerifyMode, retention: RetentionSettings) -> WorkerSpec:
    """The ``functions`` worker, storing with ``verify`` (the upload section's mode)."""
    artifacts = ArtifactStore.from_settings(store, encryption, verify=verify)
    handler = FunctionsHandler(functions, retention, artifacts)
    return SPEC.bind(handler, on_shutdown=artifacts.close)
