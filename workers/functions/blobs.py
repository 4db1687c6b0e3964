"""Blob containers of one account into packs: list every blob with its properties and metadata, carry over
the ones whose ETag the previous index knows (not read again), download the rest in parallel. Small blobs are
packed in memory (bounded: ``pack_size`` plus the blobs in flight, each below ``large_blob``); a large blob is
streamed from the service into its own artifact."""
from __future__ import annotations

import hashlib
import io
import secrets
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator

from azure.storage.blob import BlobProperties, BlobServiceClient

from workers.artifacts.service import ArtifactStore
from workers.functions import policies
from workers.functions.client import translated
from workers.functions.layout import account_prefix, blob_id
from workers.functions.settings import FunctionsSettings

Emit = Callable[[dict], None]


@dataclass
class BlobStats:
    containers: int = 0
    blobs: int = 0
    bytes: int = 0
    blobs_read: int = 0
    blobs_unchanged: int = 0
    bytes_read: int = 0
    snapshots: int = 0
    index: dict = field(default_factory=dict)


def etag_of(value: str | None) -> str:
    """The ETag without quotes (listings give it bare, downloads quoted)."""
    return (value or "").strip('"')


def blob_record(container: str, props: BlobProperties) -> dict:
    cs = props.content_settings
    md5 = bytes(cs.content_md5).hex() if cs.content_md5 else None
    record = {"t": "blob", "container": container, "name": props.name, "size": props.size,
            "etag": etag_of(props.etag),
            "last_modified": props.last_modified.isoformat() if props.last_modified else None,
            "blob_type": str(getattr(props.blob_type, "value", props.blob_type)),
            "content_settings": {"content_type": cs.content_type, "content_encoding": cs.content_encoding,
                                 "content_language": cs.content_language,
                                 "content_disposition": cs.content_disposition,
                                 "cache_control": cs.cache_control, "content_md5": md5},
            "metadata": dict(props.metadata or {}),
            "tier": str(getattr(props.blob_tier, "value", props.blob_tier)) if props.blob_tier else None}
    if props.snapshot:
        record["snapshot"] = props.snapshot     # a blob snapshot (immutable), listed before its base blob
    return record


def record_id(record: dict) -> str:
    """The index's id of a blob record: its name, and its snapshot's time for a snapshot."""
    snapshot = record.get("snapshot")
    return blob_id(record["container"], record["name"] + (f"\n{snapshot}" if snapshot else ""))


class _ChunkStream(io.RawIOBase):
    """A readable stream over the downloader's chunks (never the whole blob in memory)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks, self.rest = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while not self.rest:
            self.rest = next(self.chunks, b"")
            if not self.rest:
                return 0
        n = min(len(buffer), len(self.rest))
        buffer[:n] = self.rest[:n]
        self.rest = self.rest[n:]
        return n


class _Hashing(io.RawIOBase):
    def __init__(self, raw: io.RawIOBase) -> None:
        self.raw, self.sha, self.size = raw, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = self.raw.readinto(buffer)
        if n:
            self.sha.update(memoryview(buffer)[:n])
            self.size += n
        return n


class BlobBackup:
    def __init__(self, settings: FunctionsSettings, store: ArtifactStore, stamp: str, account: str,
                 service: BlobServiceClient, previous: dict) -> None:
        self.s, self.store, self.account, self.service, self.previous = settings, store, account, service, previous
        self.prefix = account_prefix(stamp, account)
        self.stats = BlobStats()
        self.pack = bytearray()
        self.pending: list[dict] = []        # records whose content is in self.pack (location filled on flush)

    def run(self, emit: Emit) -> BlobStats:
        with ThreadPoolExecutor(self.s.downloads, thread_name_prefix=f"blobs-{self.account}") as pool:
            window: list[tuple[dict, Future]] = []
            for record in self._listing(emit):
                known = self.previous.get(record_id(record))
                if known and known[0] == record["etag"]:
                    record["sha256"], record["loc"] = known[4], known[1:4]
                    self._done(record, emit, read=False)
                    continue
                window.append((record, pool.submit(self._download, record)))
                if len(window) >= self.s.downloads * 2:
                    self._collect(window.pop(0), emit)
            while window:
                self._collect(window.pop(0), emit)
        self._flush(emit)
        return self.stats

    def _listing(self, emit: Emit) -> Iterator[dict]:
        with translated(self.account, "listing containers"):
            containers = list(self.service.list_containers(include_metadata=True))
        for c in containers:
            self.stats.containers += 1
            client = self.service.get_container_client(c.name)
            with translated(self.account, f"reading the access policy of {c.name}"):
                access = client.get_container_access_policy()
            emit({"t": "container", "name": c.name, "metadata": dict(c.metadata or {}),
                  "public_access": access.get("public_access") or c.public_access,
                  "policies": policies.encode(access.get("signed_identifiers"))})
            with translated(self.account, f"listing blobs of {c.name}"):
                for props in client.list_blobs(include=["metadata", "snapshots"]):
                    yield blob_record(c.name, props)

    def _download(self, record: dict) -> tuple[dict, bytes | None]:
        blob = self.service.get_blob_client(record["container"], record["name"], snapshot=record.get("snapshot"))
        with translated(self.account, f"reading blob {record['container']}/{record['name']}"):
            down = blob.download_blob(max_concurrency=1)
            record["etag"] = etag_of(down.properties.etag)     # the version actually read
            if down.size >= self.s.large_blob:
                key = f"{self.prefix}/packs/{secrets.token_hex(16)}"
                hashing = _Hashing(_ChunkStream(down.chunks()))
                stored = self.store.put(key, lambda: io.BufferedReader(hashing, 1 << 20))
                record["sha256"], record["loc"] = hashing.sha.hexdigest(), [key, 0, stored.plaintext_size]
                record["size"] = stored.plaintext_size
                return record, None
            data = down.readall()
        record["size"], record["sha256"] = len(data), hashlib.sha256(data).hexdigest()
        return record, data

    def _collect(self, item: tuple[dict, Future], emit: Emit) -> None:
        record, data = item[1].result()
        self.stats.bytes_read += record["size"]
        if data is None:
            self._done(record, emit, read=True)
            return
        record["loc"] = [None, len(self.pack), len(data)]
        self.pack += data
        self.pending.append(record)
        if len(self.pack) >= self.s.pack_size:
            self._flush(emit)

    def _flush(self, emit: Emit) -> None:
        if not self.pending:
            return
        key = f"{self.prefix}/packs/{secrets.token_hex(16)}"
        self.store.put_buffer(key, bytes(self.pack), new_key=True)
        for record in self.pending:
            record["loc"][0] = key
            self._done(record, emit, read=True)
        self.pack, self.pending = bytearray(), []

    def _done(self, record: dict, emit: Emit, *, read: bool) -> None:
        st = self.stats
        st.blobs += 1
        st.bytes += record["size"]
        st.blobs_read += read
        st.blobs_unchanged += not read
        st.snapshots += bool(record.get("snapshot"))
        st.index[record_id(record)] = [record["etag"], *record["loc"],
                                                                  record["sha256"]]
        emit(record)

