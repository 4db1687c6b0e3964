"""One storage account into one backup set: blobs (incremental), queues, tables → the account's manifest
(JSON lines, spooled to a temporary file, then streamed into the store), its index and its summary."""
from __future__ import annotations

import tempfile
from pathlib import Path

from contracts.events.functions import MAX_LISTED
from workers.artifacts.service import ArtifactStore
from workers.functions.blobs import BlobBackup
from workers.functions.client import open_account
from workers.functions.entities import backup_queues, backup_tables
from workers.functions.layout import account_prefix, latest_index, manifest_key, put_json
from workers.functions.settings import FunctionsSettings, StorageAccount
from workers.functions.writing import ManifestWriter

REFUSED_TEXT = 500


def backup_account(settings: FunctionsSettings, store: ArtifactStore, meta: ArtifactStore, account: StorageAccount,
                   stamp: str, set_id: str, *, spool_dir: str | None = None, logger=None,
                   response_hook=None) -> dict:
    """Copy ``account`` into set ``set_id``; returns its summary (also stored)."""
    clients = open_account(account.name, account.connection(), retries=settings.retries, timeout=settings.timeout,
                           backoff=settings.backoff, connections=settings.downloads,
                           response_hook=response_hook)
    key = manifest_key(stamp, set_id, account.name)
    try:
        with tempfile.TemporaryDirectory(prefix="functions-", dir=spool_dir) as work:
            path = Path(work) / "manifest.jsonl"
            with open(path, "w", encoding="utf-8") as out:
                emit = ManifestWriter(out, f"{account_prefix(stamp, account.name)}/packs/")
                emit({"t": "account", "format": 1, "name": account.name, "stamp": stamp, "backup_set_id": set_id})
                previous = latest_index(meta, stamp, account.name, before=set_id)
                blobs = BlobBackup(settings, store, stamp, account.name, clients.blobs, previous).run(emit)
                queues = backup_queues(account.name, clients.queues, emit, receive=settings.queue_copy == "receive",
                                       visibility_timeout=settings.queue_visibility_timeout)
                tables, entities = backup_tables(account.name, clients.tables, emit)
                emit.end()
            put_json(meta, f"{account_prefix(stamp, account.name)}/index/{set_id}.json",
                     {"format": 1, "blobs": blobs.index})
            store.put(key, lambda: open(path, "rb"), replace_uncommitted=True)
    finally:
        clients.close()
    summary = {"account": account.name, "manifest_key": key, "containers": blobs.containers, "blobs": blobs.blobs,
               "bytes": blobs.bytes, "blobs_read": blobs.blobs_read, "blob_snapshots": blobs.snapshots,
               "blobs_unchanged": blobs.blobs_unchanged,
               "bytes_read": blobs.bytes_read, "queues": queues.queues, "messages": queues.messages,
               "messages_not_copied": queues.missed, "messages_counted": queues.counted,
               "queues_partial": queues.partial[:MAX_LISTED], "tables": tables, "entities": entities,
               "items_refused": len(emit.refused), "refused": [r[:REFUSED_TEXT] for r in emit.refused[:MAX_LISTED]]}
    put_json(meta, summary_key(stamp, account.name, set_id), summary)
    if logger is not None and emit.refused:
        logger.warning("account %s: %d item(s) left out of the copy, which its restore would refuse: %s",
                       account.name, len(emit.refused), "; ".join(emit.refused[:5]))
    if logger is not None:
        logger.info("account %s: %d blob(s) (%d read, %d unchanged), %d message(s), %d entit(ies)", account.name,
                    blobs.blobs, blobs.blobs_read, blobs.blobs_unchanged, queues.messages, entities)
    return summary


def summary_key(stamp: str, account: str, set_id: str) -> str:
    return f"{account_prefix(stamp, account)}/summary/{set_id}.json"
