"""A Function Apps storage copy into a new account: containers and blobs (properties, metadata), queues and
their messages, tables and their entities; every blob's SHA-256 checked against the manifest before it becomes
visible, then the target listed and counted against the manifest.

Fails closed. The manifest is read to its end (which verifies it) and every line checked
(:mod:`workers.functions.records`) into a private spool before anything is written to the account, so a damaged
or forged manifest changes nothing. A blob's content must lie inside one of the account's packs; a small one is
written from memory after its hash matched, a larger one is staged as uncommitted blocks and committed only
once its hash matched (an append or page blob, which cannot be staged, is read and checked once first). A target
container that already holds blobs is refused (a restore goes to a *new* account)."""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobBlock, ContentSettings

from workers.artifacts.service import ArtifactStore
from workers.functions import policies
from workers.functions.client import AccountClients, classify, translated
from workers.functions.entities import entity_of
from workers.functions.manifest import CheckedManifest, require
from workers.functions.records import (BlobRecord, ContainerRecord, EntityRecord, ManifestError, MessageRecord,
                                       QueueRecord, Record, TableRecord)
from workers.runtime.errors import PermanentError
from workers.storage.codec import KeyRing

MANUAL_STEPS = """\
Manual steps (App Service does not do these for you):
  1. For each Function App that used the old account, set the application settings AzureWebJobsStorage and
     AzureWebJobsDashboard (and WEBSITE_CONTENTAZUREFILECONNECTIONSTRING if it pointed there) to the new
     account's connection string: Function App > Configuration > Application settings, or
     `az functionapp config appsettings set --name APP --resource-group RG --settings AzureWebJobsStorage=...`.
  2. Restart each Function App (once; restart again if the portal still shows storage errors after a minute).
  3. Check: the Functions list loads without a storage warning; timer triggers fire at their next slot
     (their schedule state was restored); queue-triggered functions pick up the restored messages; Durable
     Functions instances show their history (the TaskHub tables and control queues were restored); the
     Monitor tab shows new invocations. Messages in flight after the backup are not in the copy."""


@dataclass
class RestoreReport:
    containers: int = 0
    blobs: int = 0
    bytes: int = 0
    queues: int = 0
    messages: int = 0
    tables: int = 0
    entities: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class _Hashed:
    """An iterable of pieces that hashes what passes through it."""

    def __init__(self, pieces: Iterator[bytes], sha) -> None:
        self.pieces, self.sha = pieces, sha

    def __iter__(self) -> Iterator[bytes]:
        for piece in self.pieces:
            self.sha.update(piece)
            yield piece


class Restorer:
    def __init__(self, store: ArtifactStore, target: AccountClients, *, keys: KeyRing | None,
                 containers: Sequence[str] | None = None) -> None:
        self.store, self.target, self.keys = store, target, keys
        self.only = set(containers) if containers else None
        self.report = RestoreReport()
        self.expected: dict[str, int] = {}      # container / "queue:" / "table:" -> count
        self.manifest: CheckedManifest | None = None

    def run(self, stamp: str, set_id: str, account: str) -> RestoreReport:
        with CheckedManifest(self.store, self.keys, stamp, set_id, account) as manifest:
            self.manifest = manifest
            for record in manifest.records():
                self._one(record)
        self.verify()
        return self.report

    def _one(self, r: Record) -> None:
        t, rep = self.target, self.report
        if isinstance(r, ContainerRecord) and self._wanted(r.name):
            client = t.blobs.get_container_client(r.name)
            with translated(t.name, f"creating container {r.name}"):
                try:
                    client.create_container(metadata=r.metadata or None)
                except ResourceExistsError:
                    if next(iter(client.list_blobs(results_per_page=1)), None) is not None:
                        raise PermanentError(f"container {r.name} already holds blobs in the target account",
                                             hint="Restore into a new, empty storage account (or delete the "
                                                  "container there first).") from None
            self._container_access(client, r)
            rep.containers += 1
            self.expected[r.name] = self.expected[f"snapshots:{r.name}"] = 0
        elif isinstance(r, BlobRecord) and self._wanted(r.container):
            self._blob(r)
        elif isinstance(r, QueueRecord):
            with translated(t.name, f"creating queue {r.name}"):
                try:
                    t.queues.create_queue(r.name, metadata=r.metadata or None)
                except ResourceExistsError:
                    pass
                if r.policies:
                    t.queues.get_queue_client(r.name).set_queue_access_policy(policies.for_queue(r.policies))
            rep.queues += 1
            self.expected[f"queue:{r.name}"] = 0
        elif isinstance(r, MessageRecord):
            with translated(t.name, f"sending a message to {r.queue}"):
                t.queues.get_queue_client(r.queue).send_message(r.content)
            rep.messages += 1
            self.expected[f"queue:{r.queue}"] += 1
        elif isinstance(r, TableRecord):
            with translated(t.name, f"creating table {r.name}"):
                table = t.tables.create_table_if_not_exists(r.name)
                if r.policies:
                    table.set_table_access_policy(policies.for_table(r.policies))
            rep.tables += 1
            self.expected[f"table:{r.name}"] = 0
        elif isinstance(r, EntityRecord):
            try:
                entity = entity_of({"props": r.props})
            except (ValueError, TypeError) as exc:
                raise ManifestError(f"an entity of table {r.table}: {exc}") from None
            with translated(t.name, f"writing an entity of {r.table}"):
                t.tables.get_table_client(r.table).upsert_entity(entity)
            rep.entities += 1
            self.expected[f"table:{r.table}"] += 1

    def _container_access(self, client, r: ContainerRecord) -> None:
        """The container's public access level and stored access policies, as they were. An account that
        forbids public access refuses the level: a problem to report, the rest of the restore goes on."""
        if not (r.public_access or r.policies):
            return
        try:
            client.set_container_access_policy(policies.for_container(r.policies), public_access=r.public_access)
        except HttpResponseError as exc:
            if getattr(exc, "status_code", None) != 409:
                raise classify(exc, self.target.name, f"setting the access policy of container {r.name}") \
                    from None
            self.report.problems.append(f"container {r.name}: public access '{r.public_access}' and "
                                        f"{len(r.policies)} stored access polic(ies) refused by the "
                                        f"target account (HTTP 409 {exc.error_code}): set them by hand")

    def _wanted(self, container: str) -> bool:
        return self.only is None or container in self.only

    def _blob(self, r: BlobRecord) -> None:
        settings = ContentSettings(**r.content_settings,
                                   content_md5=bytearray(r.content_md5) if r.content_md5 else None)
        client = self.target.blobs.get_blob_client(r.container, r.name)
        data = self.manifest.small(r)  # type: ignore[union-attr]
        if data is not None:
            with translated(self.target.name, f"writing {r.what}"):
                client.upload_blob(data, length=len(data), blob_type=r.blob_type, content_settings=settings,
                                   metadata=r.metadata or None, overwrite=True)
        elif r.blob_type == "BlockBlob":
            self._staged(client, r, settings)
        else:
            self._checked_twice(client, r, settings)
        if r.snapshot:           # its content is now the blob's: keep it as a snapshot (taken now)
            with translated(self.target.name, f"snapshotting {r.what}"):
                client.create_snapshot(metadata=r.metadata or None)
            self.expected[f"snapshots:{r.container}"] += 1
        else:
            self.expected[r.container] += 1
        self.report.blobs += 1
        self.report.bytes += r.loc.length

    def _staged(self, client, r: BlobRecord, settings: ContentSettings) -> None:
        """Uncommitted blocks, committed only when the bytes match the manifest's SHA-256 (else nothing shows)."""
        sha, blocks = hashlib.sha256(), []
        with self.manifest.pieces(r) as pieces:  # type: ignore[union-attr]
            for n, piece in enumerate(pieces):
                sha.update(piece)
                block = base64.b64encode(f"appsvc-dr-{n:08d}".encode()).decode()
                with translated(self.target.name, f"writing {r.what}"):
                    client.stage_block(block, piece, length=len(piece))
                blocks.append(BlobBlock(block_id=block))
        require(sha.hexdigest() == r.sha256, r)
        with translated(self.target.name, f"writing {r.what}"):
            client.commit_block_list(blocks, content_settings=settings, metadata=r.metadata or None)

    def _checked_twice(self, client, r: BlobRecord, settings: ContentSettings) -> None:
        """An append or page blob cannot be staged: its bytes are read and checked, then read again and written
        (and checked again)."""
        self.manifest.check(r)  # type: ignore[union-attr]
        sha = hashlib.sha256()
        with self.manifest.pieces(r) as pieces:  # type: ignore[union-attr]
            with translated(self.target.name, f"writing {r.what}"):
                client.upload_blob(_Hashed(pieces, sha), length=r.loc.length, blob_type=r.blob_type,
                                   content_settings=settings, metadata=r.metadata or None, overwrite=True)
        require(sha.hexdigest() == r.sha256, r)

    def verify(self) -> None:
        """Count what the target holds against what was restored."""
        t = self.target
        for name, want in self.expected.items():
            with translated(t.name, f"counting {name}"):
                if name.startswith("queue:"):
                    got = t.queues.get_queue_client(name[6:]).get_queue_properties().approximate_message_count
                elif name.startswith("table:"):
                    got = sum(1 for _ in t.tables.get_table_client(name[6:]).list_entities(select=["RowKey"]))
                elif name.startswith("snapshots:"):
                    got = sum(1 for b in t.blobs.get_container_client(name[10:]).list_blobs(include=["snapshots"])
                              if b.snapshot)
                else:
                    got = sum(1 for _ in t.blobs.get_container_client(name).list_blobs())
            if got != want:
                self.report.problems.append(f"{name}: {got} in the target, {want} restored")
