"""Where snapshots live in the store, and the index of content blobs.

Layout under ``<stamp>/fileshare/`` (not a backup set: retention of sets never deletes it):

* ``packs/<pack-id>`` — blobs (chunks of file content) concatenated, stored as one artifact (zstd unless
  samples of the pack do not compress, and AES-GCM with the certificate-wrapped key when a certificate is
  configured), encoded in memory in one go; a random 256-bit pack id (the record next to it holds the
  SHA-256);
* ``index/<index-id>`` — JSON ``{"format": 1, "packs": [{"id": PACK, "blobs": [[BLOB, OFFSET, LENGTH], ...]}]}``
  (offsets into the pack's plaintext), written right after each pack, merged when they pile up; in the
  artifact format (zstd, checksummed) but without a record: the id is the SHA-256 of that JSON, and a
  ``"signature"`` member appended to it signs the id under the object's key (``workers.storage.signing``).
  Reading one stops at a decoded size derived from its stored size (``INDEX_EXPANSION`` × stored, at most
  ``INDEX_MAX_BYTES``); an index object that is corrupt, too large or not validly signed is skipped with a
  warning (its packs' blobs are then simply stored again), never blocking syncs and restores;
* ``snapshots/<snapshot-id>.json`` — the manifest (``workers.repository.manifest``), encrypted like packs;
* ``snapshots/<snapshot-id>.summary.json`` — what the ``fileshare-synced`` event says (no content).

Index and summary are compressed but never encrypted: the worker holds only the certificate, not its private
key, and must read them back to deduplicate and to answer a redelivered event. They hold content hashes,
sizes and the event's own fields, like the artifact records (``*.record.json``) do. A worker-local cache
(``fileshare.cache_dir``) keeps the last manifest so an encrypted repository still syncs incrementally: its
files are 0600 in 0700 directories (a manifest lists every file name of the share).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import secrets
import threading
from pathlib import Path
from typing import BinaryIO, ContextManager, Iterator

import zstandard

from contracts.envelope import NAME_PATTERN
from workers.artifacts.service import RECORD_SUFFIX, ArtifactStore, StoredArtifact
from workers.repository.index import Index, PackEntries, index_doc
from workers.repository.manifest import Manifest
from workers.repository.summary import checked_summary
from workers.runtime.errors import PermanentError
from workers.storage.base import ObjectNotFound, locked_until
from workers.storage.codec import EncodedBuffer, IntegrityError, KeyRing, decode, encode
from workers.storage.signing import SIGNATURE_FIELD, trust_of

log = logging.getLogger("appsvc_dr.fileshare")
SNAPSHOT_ID = re.compile(NAME_PATTERN)         # a backup-set id, with "-p<8 hex>" for a sub-path's snapshot
MERGE_ABOVE = 16
INDEX_EXPANSION = 64                # an index object decodes to at most this many times its stored size
INDEX_MAX_BYTES = 512 << 20         # and never to more than this



def checked_snapshot(snapshot: object) -> str:
    """A snapshot id from an event, the command line or the store, before it names an object or a cache file."""
    if not isinstance(snapshot, str) or not SNAPSHOT_ID.match(snapshot):
        raise PermanentError(f"invalid snapshot id {str(snapshot)[:80]!r}: expected a backup-set id (letters, "
                             "digits, '.', '_', '-'; no '/')",
                             hint="Give a snapshot id as `appsvc-dr snapshots list` shows it; if it was read from "
                                  "the store, that object is damaged or forged: use another backup set.")
    return snapshot

class Repository:
    def __init__(self, store: ArtifactStore, stamp: str, *, cache_dir: Path | None = None) -> None:
        self.data = store
        self.meta = ArtifactStore(store.backend, certificate=None, compress=store.compress, level=store.level,
                                  verify=store.verify_mode)
        self.stamp, self.prefix = stamp, f"{stamp}/fileshare"
        self.index = Index()
        self.cache: Path | None = None
        if cache_dir is not None:
            tag = hashlib.sha256(f"{store.backend.name}|{stamp}".encode()).hexdigest()[:16]
            self.cache = Path(os.path.expanduser(str(cache_dir))) / tag

    @property
    def encrypted(self) -> bool:
        return self.data.certificate is not None

    # ---- keys ------------------------------------------------------------------------------------
    def pack_key(self, pack: str) -> str:
        return f"{self.prefix}/packs/{pack}"

    def index_key(self, index_id: str) -> str:
        return f"{self.prefix}/index/{index_id}"

    def manifest_key(self, snapshot: str) -> str:
        return f"{self.prefix}/snapshots/{checked_snapshot(snapshot)}.json"

    def summary_key(self, snapshot: str) -> str:
        return f"{self.prefix}/snapshots/{checked_snapshot(snapshot)}.summary.json"

    # ---- small helpers ---------------------------------------------------------------------------
    def _read(self, store: ArtifactStore, key: str, keys: KeyRing | None = None) -> bytes:
        out = io.BytesIO()
        store.get(key, out, keys=keys)
        return out.getvalue()

    def _keys_under(self, folder: str) -> Iterator[tuple[str, object]]:
        base = f"{self.prefix}/{folder}/"
        for info in self.data.backend.list(base):
            if not info.key.endswith(RECORD_SUFFIX):
                yield info.key[len(base):], info

    def _cache_file(self, *parts: str) -> Path | None:
        return self.cache.joinpath(*parts) if self.cache is not None else None

    def _cache_put(self, path: Path | None, body: bytes) -> None:
        """Write a cache file 0600 in 0700 directories (manifests name every file of the share)."""
        if path is None or self.cache is None:
            return
        try:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            for folder in (self.cache, path.parent):
                folder.mkdir(mode=0o700, exist_ok=True)
                os.chmod(folder, 0o700)
            tmp = path.with_name(path.name + f".tmp-{os.getpid()}-{threading.get_ident()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), 0o600)
                fh.write(zstandard.ZstdCompressor(level=3).compress(body))
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write the fileshare cache %s: %s", path, exc)

    @staticmethod
    def _cache_get(path: Path | None) -> bytes | None:
        try:
            return zstandard.ZstdDecompressor().decompress(path.read_bytes()) if path else None
        except (OSError, zstandard.ZstdError):
            return None

    # ---- index -----------------------------------------------------------------------------------
    def load_index(self) -> Index:
        """Read every index object (from the local cache when seen before: they never change)."""
        for name, info in self._keys_under("index"):
            if name in self.index.objects or "/" in name:
                continue
            cached = self._cache_file("index", name)
            body = self._cache_get(cached)
            try:
                if body is None:
                    body = self.read_index(name, stored_size=getattr(info, "size", None))
                    self._cache_put(cached, body)
                self.index.load(body)
            except ObjectNotFound:
                continue                                        # merged away meanwhile
            except PermanentError as exc:                       # corrupt, oversized or forged: not ours to trust
                log.warning("skipping index object %s: %s", self.index_key(name), exc.message)
                continue
            self.index.objects.add(name)
        return self.index

    def read_index(self, index_id: str, *, stored_size: int | None = None) -> bytes:
        """An index object's unsigned body: the artifact format without a record (its hashes are inside it,
        and its id is the SHA-256 of its body), so writing one costs a single upload, not four requests. The
        decoded size is capped (see the module doc); the signature is checked when verify keys are set."""
        key = self.index_key(index_id)
        if stored_size is None:
            stored_size = self.data.backend.stat(key).size
        cap = min(INDEX_MAX_BYTES, max(1 << 20, stored_size * INDEX_EXPANSION))
        with self.data.backend.open(key) as stream:
            raw = decode(stream, keys=None).read(cap + 1)
        if len(raw) > cap:
            raise IntegrityError(f"index object {index_id[:12]} decodes to more than {cap} bytes "
                                 f"({stored_size} stored): refused")
        body, signature = raw, None
        if raw.endswith(b"}") and SIGNATURE_FIELD.encode() in raw:
            try:
                doc = json.loads(raw)
                signature = doc.pop(SIGNATURE_FIELD, None) if isinstance(doc, dict) else None
            except ValueError:
                raise IntegrityError(f"index object {index_id[:12]} is not JSON") from None
            if signature is not None:
                body = json.dumps(doc, separators=(",", ":")).encode()
        if hashlib.sha256(body).hexdigest() != index_id:
            raise IntegrityError(f"index object {index_id[:12]} does not match its id")
        trust_of(self.data.backend).check(key, bytes.fromhex(index_id), signature, what="index object")
        return body

    def write_index(self, packs: PackEntries) -> str:
        doc = index_doc(packs)
        body = json.dumps(doc, separators=(",", ":")).encode()
        index_id = hashlib.sha256(body).hexdigest()
        signature = trust_of(self.data.backend).sign(self.index_key(index_id), bytes.fromhex(index_id))
        stored = body if signature is None else \
            json.dumps({**doc, SIGNATURE_FIELD: signature}, separators=(",", ":")).encode()
        encoded = encode(io.BytesIO(stored), compress=True, recipient=None, level=self.data.level)
        self.data.backend.put(self.index_key(index_id), encoded, metadata={"dr-format": "1", "dr-encrypted": "false"})
        self._cache_put(self._cache_file("index", index_id), body)
        self.index.add(packs)
        self.index.objects.add(index_id)
        return index_id

    def merge_index(self, above: int = MERGE_ABOVE) -> bool:
        """Rewrite many small index objects as one (the merged one is stored before any is deleted)."""
        olds = sorted(self.index.objects)
        if len(olds) <= above or locked_until(self.data.backend, map(self.index_key, olds)):
            return False                    # under S3 Object Lock: merged once the old objects may be deleted
        merged = self.write_index(self.index.packs())
        for old in olds:
            if old != merged:
                for key in (self.index_key(old), self.index_key(old) + RECORD_SUFFIX):
                    self.data.backend.delete(key)
                self.index.objects.discard(old)
        return True

    # ---- packs -----------------------------------------------------------------------------------
    def put_pack(self, body: bytes | bytearray | memoryview) -> tuple[str, StoredArtifact]:
        """Store a new pack under a random id: encoded in memory, no record to look for under a new random key,
        and no SHA-256 of the pack as a whole (every blob in it is named by its own, checked when read; the
        stored bytes keep theirs)."""
        pack = secrets.token_hex(32)
        stored = self.data.put_buffer(self.pack_key(pack), body, new_key=True, hash_plaintext=False)
        return pack, stored

    def encode_pack(self, body: bytes | bytearray | memoryview) -> EncodedBuffer:
        """A new pack encoded in memory (as ``put_pack`` stores it); upload it with :meth:`store_pack`. Once it
        is ``detached`` (compressed or encrypted) ``body`` may be reused at once."""
        return self.data.encode_new(body, hash_plaintext=False)

    def store_pack(self, encoded: EncodedBuffer) -> tuple[str, StoredArtifact]:
        pack = secrets.token_hex(32)
        return pack, self.data.put_encoded(self.pack_key(pack), encoded)

    def read_pack(self, pack: str, out, keys: KeyRing | None, *, blobs_checked: bool = False) -> None:
        """The pack's plaintext into ``out``, checked by the artifact format. ``blobs_checked``: the caller checks
        every blob it takes from it against its id (a restore), so the SHA-256 of the stored bytes (one more pass
        over every byte) is skipped; the record is still read and its signature checked."""
        self.data.get(self.pack_key(pack), out, keys=keys, check_stored=not blobs_checked)

    def open_pack(self, pack: str, keys: KeyRing | None) -> ContextManager[BinaryIO]:
        """The pack's plaintext as a stream, for a caller that checks every blob it takes against its id (the
        stored bytes are not hashed; see :meth:`read_pack`)."""
        return self.data.open_plain(self.pack_key(pack), keys=keys, check_stored=False)

    # ---- snapshots -------------------------------------------------------------------------------
    def put_manifest(self, manifest: Manifest) -> StoredArtifact:
        body = manifest.to_json()
        committed = self.meta.record(self.summary_key(manifest.snapshot_id), verify=False) is not None
        stored = self.data.put(self.manifest_key(manifest.snapshot_id), lambda: io.BytesIO(body),
                               known_sha256=hashlib.sha256(body).hexdigest(),
                               replace_uncommitted=not committed)    # a crashed sync's manifest: no summary
        self._cache_put(self._cache_file("manifests", f"{manifest.snapshot_id}.json.zst"), body)
        return stored

    def manifest(self, snapshot: str, keys: KeyRing | None = None, *, cached: bool = True) -> Manifest:
        checked_snapshot(snapshot)          # it names a cache file too
        body = self._cache_get(self._cache_file("manifests", f"{snapshot}.json.zst")) if cached else None
        if body is None:
            body = self._read(self.data, self.manifest_key(snapshot), keys)
        return Manifest.from_json(body)

    def cached_manifest(self, snapshot: str) -> Manifest | None:
        """The manifest from the local cache, else from the store if this worker can decrypt it (never
        when it is encrypted: the worker has no private key)."""
        body = self._cache_get(self._cache_file("manifests", f"{checked_snapshot(snapshot)}.json.zst"))
        if body is None and not self._record_encrypted(self.manifest_key(snapshot)):
            try:
                body = self._read(self.data, self.manifest_key(snapshot))
            except ObjectNotFound:
                return None
        return Manifest.from_json(body) if body is not None else None

    def _record_encrypted(self, key: str) -> bool:
        record = self.data.record(key)
        return record is None or record.encrypted

    def put_summary(self, snapshot: str, summary: dict) -> StoredArtifact:
        body = json.dumps(summary, sort_keys=True, ensure_ascii=False).encode()
        return self.meta.put(self.summary_key(snapshot), lambda: io.BytesIO(body),
                             known_sha256=hashlib.sha256(body).hexdigest())

    def summary(self, snapshot: str) -> dict | None:
        """``snapshot``'s summary (None: the snapshot is not complete); :class:`SummaryRefused` when the object
        there is not a summary of it (``summary.checked_summary``)."""
        try:
            return checked_summary(self._read(self.meta, self.summary_key(snapshot)), snapshot)
        except ObjectNotFound:
            return None

    def summaries(self, *, newest_first: bool = False) -> Iterator[dict]:
        """Every completed snapshot's summary, in the order they were stored (or the reverse)."""
        found = sorted((info.modified, name[:-len(".summary.json")]) for name, info in self._keys_under("snapshots")
                       if name.endswith(".summary.json"))
        for _, snapshot in (reversed(found) if newest_first else found):
            try:
                summary = self.summary(snapshot)
            except PermanentError as exc:               # forged or damaged: never a base for the next sync
                log.warning("skipping snapshot summary %s: %s", self.summary_key(snapshot), exc.message)
                continue
            if summary is not None:
                yield summary

    def latest(self, source: str, sub_path: str | None, *, before: str | None = None) -> dict | None:
        """The newest completed snapshot of the same source and sub-path."""
        for summary in self.summaries(newest_first=True):
            if summary.get("source") == source and summary.get("sub_path") == sub_path \
                    and summary["snapshot_id"] != before:
                return summary
        return None
