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
import io
import json
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator, Sequence

from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobBlock, ContentSettings

from workers.artifacts.service import ArtifactStore
from workers.functions import policies
from workers.functions.client import AccountClients, classify, translated
from workers.functions.entities import entity_of
from workers.functions.layout import account_prefix, manifest_key
from workers.functions.records import (COUNTED, MAX_LINE, AccountRecord, BlobRecord, ContainerRecord, EndRecord,
                                       EntityRecord, ManifestError, MessageRecord, QueueRecord, Record, TableRecord,
                                       declares, parse)
from workers.runtime.errors import PermanentError
from workers.storage.codec import KeyRing

SLICE_MAX = 1 << 20         # a blob up to this size is written from memory
PACK_MEMORY = 64 << 20      # a pack is held decoded in memory for its small blobs only up to this size
BLOCK = 4 << 20             # staged block size of a streamed block blob
DAMAGED = "The store holds a damaged copy; restore from another backup set."

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


def _require(matches: bool, r: BlobRecord) -> None:
    if not matches:
        raise PermanentError(f"{r.what}: content does not match the manifest's SHA-256", hint=DAMAGED)


class PackReader:
    """The last few small packs read, decoded (each at most ``PACK_MEMORY``)."""

    def __init__(self, store: ArtifactStore, keys: KeyRing | None, keep: int = 2) -> None:
        self.store, self.keys, self.keep, self.cache = store, keys, keep, OrderedDict()

    def slice(self, key: str, offset: int, length: int) -> bytes:
        if key not in self.cache:
            out = io.BytesIO()
            self.store.get(key, out, keys=self.keys)
            self.cache[key] = out.getvalue()
            while len(self.cache) > self.keep:
                self.cache.popitem(last=False)
        return self.cache[key][offset:offset + length]


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    """The lines of a stream, none longer than ``MAX_LINE`` (a longer one is refused, never held)."""
    rest = b""
    while chunk := stream.read(1 << 20):
        rest += chunk
        *lines, rest = rest.split(b"\n")
        for line in (*lines, rest):
            if len(line) > MAX_LINE:
                raise ManifestError(f"Function Apps manifest: a line longer than {MAX_LINE >> 20} MiB")
        yield from lines
    if rest:
        yield rest


def _slice(plain: BinaryIO, offset: int, length: int) -> Iterator[bytes]:
    """``length`` bytes from ``offset`` of a pack's plaintext, in pieces of at most ``BLOCK``; then the rest of
    the pack is read too, so its own hashes are checked when the stream closes."""
    skip = offset
    while skip:
        skip -= len(plain.read(min(skip, BLOCK)) or b"") or skip
    left = length
    while left:
        piece = plain.read(min(left, BLOCK))
        if not piece:
            raise ManifestError(f"the pack ends before the blob's {length} bytes")
        left -= len(piece)
        yield piece
    while plain.read(BLOCK):
        pass


class Restorer:
    def __init__(self, store: ArtifactStore, target: AccountClients, *, keys: KeyRing | None,
                 containers: Sequence[str] | None = None) -> None:
        self.store, self.target, self.keys = store, target, keys
        self.only = set(containers) if containers else None
        self.packs = PackReader(store, keys)
        self.report = RestoreReport()
        self.expected: dict[str, int] = {}      # container / "queue:" / "table:" -> count
        self.pack_sizes: dict[str, int] = {}    # pack key -> plaintext size, from its (checked) record

    def run(self, stamp: str, set_id: str, account: str) -> RestoreReport:
        prefix = f"{account_prefix(stamp, account)}/packs/"
        with tempfile.TemporaryFile() as spool:       # 0600, unlinked: the checked manifest, never by name
            self._check(manifest_key(stamp, set_id, account), prefix, spool, AccountRecord(account, stamp, set_id))
            spool.seek(0)
            for n, line in enumerate(spool, 1):
                self._one(parse(json.loads(line), prefix, n))
        self.verify()
        return self.report

    def _check(self, key: str, prefix: str, spool: BinaryIO, whose: AccountRecord) -> None:
        """Read the whole manifest (verifying it) and check every line and its order before anything changes:
        first the account line naming this account, stamp and set, last the end line counting what came between,
        each blob, message and entity after the container, queue or table it belongs to."""
        declared: set[str] = set()
        seen = {kind: 0 for kind in COUNTED.values()}
        first = last = None
        with self.store.open_plain(key, keys=self.keys) as plain:
            for n, raw in enumerate((line for line in _lines(plain) if line.strip()), 1):
                try:
                    item = json.loads(raw)
                except ValueError:
                    raise ManifestError(f"Function Apps manifest line {n}: not JSON") from None
                record = parse(item, prefix, n)
                if (n == 1) != isinstance(record, AccountRecord) or last is not None:
                    raise ManifestError(f"Function Apps manifest line {n}: the account line must come first and "
                                        "the end line last")
                first = first or record
                if isinstance(record, EndRecord):
                    last = record
                    continue
                if isinstance(record, BlobRecord):
                    self._inside_its_pack(record)
                kind, owner = declares(record)
                if owner is not None and owner not in declared:
                    raise ManifestError(f"Function Apps manifest line {n}: {kind} of {owner!r}, which no earlier "
                                        "line declares")
                if owner is None and not isinstance(record, AccountRecord):
                    declared.add(f"{kind}:{record.name}")  # type: ignore[union-attr]
                seen[kind] = seen.get(kind, 0) + 1
                spool.write(json.dumps(item, separators=(",", ":")).encode() + b"\n")
        if first != whose:
            raise ManifestError(f"the Function Apps manifest at {key} belongs to {first} instead of {whose}")
        if last is None or any(last.counts[k] != seen[kind] for k, kind in COUNTED.items()):
            raise ManifestError(f"the Function Apps manifest at {key} is incomplete: its end line "
                                f"{'is missing' if last is None else f'counts {last.counts}'}; found "
                                f"{ {k: seen[kind] for k, kind in COUNTED.items()} }")

    def _inside_its_pack(self, r: BlobRecord) -> int:
        """The blob's pack exists (its record signed, when verify keys are configured) and holds its bytes: the
        pack's plaintext size."""
        sizes = self.pack_sizes
        if r.loc.pack not in sizes:
            rec = self.store.record(r.loc.pack)
            if rec is None:
                raise ManifestError(f"{r.what}: its pack {r.loc.pack} is not in the store")
            sizes[r.loc.pack] = rec.plaintext_size
        if r.loc.offset + r.loc.length > sizes[r.loc.pack]:
            raise ManifestError(f"{r.what}: lies beyond the end of its pack ({sizes[r.loc.pack]} bytes)")
        return sizes[r.loc.pack]

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
        pack_size = self._inside_its_pack(r)
        settings = ContentSettings(**r.content_settings,
                                   content_md5=bytearray(r.content_md5) if r.content_md5 else None)
        client = self.target.blobs.get_blob_client(r.container, r.name)
        if r.loc.length <= SLICE_MAX and pack_size <= PACK_MEMORY:
            data = self.packs.slice(r.loc.pack, r.loc.offset, r.loc.length)
            _require(hashlib.sha256(data).hexdigest() == r.sha256, r)
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
        with self.store.open_plain(r.loc.pack, keys=self.keys) as plain:
            for n, piece in enumerate(_slice(plain, r.loc.offset, r.loc.length)):
                sha.update(piece)
                block = base64.b64encode(f"appsvc-dr-{n:08d}".encode()).decode()
                with translated(self.target.name, f"writing {r.what}"):
                    client.stage_block(block, piece, length=len(piece))
                blocks.append(BlobBlock(block_id=block))
        _require(sha.hexdigest() == r.sha256, r)
        with translated(self.target.name, f"writing {r.what}"):
            client.commit_block_list(blocks, content_settings=settings, metadata=r.metadata or None)

    def _checked_twice(self, client, r: BlobRecord, settings: ContentSettings) -> None:
        """An append or page blob cannot be staged: its bytes are read and checked, then read again and written
        (and checked again)."""
        for write in (False, True):
            sha = hashlib.sha256()
            with self.store.open_plain(r.loc.pack, keys=self.keys) as plain:
                pieces = _slice(plain, r.loc.offset, r.loc.length)
                if not write:
                    for piece in pieces:
                        sha.update(piece)
                else:
                    with translated(self.target.name, f"writing {r.what}"):
                        client.upload_blob(_Hashed(pieces, sha), length=r.loc.length, blob_type=r.blob_type,
                                           content_settings=settings, metadata=r.metadata or None, overwrite=True)
            _require(sha.hexdigest() == r.sha256, r)

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
