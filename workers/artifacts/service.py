"""Store and fetch artifacts: streamed through the artifact format, verified, and recorded.

Each stored artifact ``KEY`` has a small JSON record ``KEY.record.json`` written after verification: sizes,
hashes of plaintext and stored bytes, compression, encryption and certificate thumbprint, times. Records
are what catalogs and manifests are rebuilt from; the store is the source of truth.

Records are signed (``workers.storage.signing``) with the key they describe bound in, and the SHA-256 of the
stored bytes in them covers the artifact's header, segments and trailer: a valid record signature plus a
read to EOF proves the artifact is the one a worker wrote under that key. Keys are write-once: different
content for a key that holds an artifact is refused; the same content is idempotent. Artifacts of the
``secrets`` component are never read unencrypted (writers ask for encryption: ``require_encryption``).
"""
from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, BinaryIO, Callable, ContextManager, Mapping

from cryptography.x509 import Certificate

from workers.artifacts.head import HeadHash
from workers.artifacts.reading import ArtifactReading, _Counting, sha256_of
from workers.artifacts.records import (RECORD_SUFFIX, OverwriteError, StoredArtifact, read_record,
                                       record_body)
from workers.artifacts.settings import VerifyMode
from workers.runtime.errors import ConfigurationError, PermanentError, TransientError
from workers.storage.codec import (EncodedBuffer, EncodingStream, IntegrityError, encode, encode_buffer,
                                      load_certificate, thumbprint)
from workers.storage.base import ObjectInfo, ObjectNotFound, StorageBackend
from workers.storage.factory import build_store
from workers.storage.settings import EncryptionSettings, StoreSettings
from workers.storage.signing import Trust, attach, trust_from_settings, trust_of

__all__ = ["ArtifactStore", "StoreOpener", "StoredArtifact", "OverwriteError", "RECORD_SUFFIX", "sha256_of"]

log = logging.getLogger("appsvc_dr.artifacts")
Opener = Callable[[], ContextManager[BinaryIO]]
Progress = Callable[[int], None]


@dataclass(frozen=True)
class StoreOpener:
    """How to open the same configured store in another process (a sync's reader processes upload their own
    packs): picklable settings. They hold the store's secrets: never logged (their reprs mask them)."""
    store: StoreSettings
    encryption: EncryptionSettings
    verify: VerifyMode = "stat"

    def __call__(self) -> "ArtifactStore":
        return ArtifactStore.from_settings(self.store, self.encryption, verify=self.verify)


class ArtifactStore(ArtifactReading):
    def __init__(self, backend: StorageBackend, *, certificate: Certificate | None = None, compress: bool = True,
                 level: int = 3, verify: VerifyMode = "stat") -> None:
        self.backend, self.certificate, self.compress = backend, certificate, compress
        self.level, self.verify_mode = level, verify
        self._warned = False
        self.opener: StoreOpener | None = None          # set when built from settings alone (from_settings)

    @classmethod
    def from_settings(cls, store: StoreSettings, encryption: EncryptionSettings, *, verify: VerifyMode = "stat",
                      backend: StorageBackend | None = None) -> ArtifactStore:
        """The configured store with the configured encryption, signing and verifying with the configured Trust;
        a bad certificate or signing key stops the process at start (ConfigurationError). ``backend``: use this
        one instead of building the store section's (a mirror target, or the primary with fallback copies)."""
        try:
            certificate = load_certificate(encryption.certificate) if encryption.certificate else None
        except PermanentError as exc:
            raise ConfigurationError(f"encryption certificate: {exc.message}", hint=exc.hint) from None
        trust = trust_from_settings(encryption)
        artifacts = cls(attach(backend or build_store(store), trust), certificate=certificate,
                        compress=encryption.compress, level=encryption.level, verify=verify)
        if backend is None:
            artifacts.opener = StoreOpener(store, encryption, verify)
        return artifacts

    @property
    def trust(self) -> Trust:
        return trust_of(self.backend)

    def close(self) -> None:
        """Release the backend's connections (see ``StorageBackend.close``)."""
        self.backend.close()

    # ---- records ---------------------------------------------------------------------------------
    def record(self, key: str, *, verify: bool = True, required: bool = False) -> StoredArtifact | None:
        """The record of ``key``, its signature checked (``verify``) when verify keys are configured or
        ``required``; SignatureError when it is unsigned, forged or belongs to another key."""
        return read_record(self.backend, key, verify=verify, required=required)

    def trusted_record(self, key: str, what: str = "artifact") -> StoredArtifact | None:
        """The record of ``key`` if it passes :meth:`record`'s checks; None when missing, and None logged at
        WARNING when unsigned, forged, moved or damaged (listings skip it rather than trust it or fail)."""
        try:
            return self.record(key)
        except PermanentError as exc:
            log.warning("skipping %s %s: %s", what, key, exc.message)
            return None

    def stored(self, key: str) -> StoredArtifact | None:
        """The artifact under ``key`` if it is stored and was verified: its record passes :meth:`record`'s checks
        and the object is there as the record describes it (size, and modification time when recorded). None
        otherwise — the job that makes it has not finished (or must run again). Marked ``deduplicated``."""
        try:
            rec = self.record(key)
            info = self.backend.stat(key) if rec is not None else None
        except ObjectNotFound:
            return None
        except PermanentError as exc:                   # damaged, unsigned or forged: not a finished job
            log.warning("artifact %s is not taken as stored: %s", key, exc.message)
            return None
        if rec is None or info is None or info.size != rec.stored_size or \
                (rec.object_modified and info.modified.isoformat() != rec.object_modified):
            return None
        return replace(rec, deduplicated=True)

    def _write_record(self, artifact: StoredArtifact) -> None:
        body = record_body(self.backend, artifact)
        self.backend.put(artifact.key + RECORD_SUFFIX, io.BytesIO(body), size=len(body),
                         sha256=hashlib.sha256(body).hexdigest())     # the store checks it (S3: and no HEAD)

    # ---- put -------------------------------------------------------------------------------------
    def put(self, key: str, open_source: Opener, *, known_sha256: str | None = None,
            require_encryption: bool = False, progress: Progress | None = None,
            replace_uncommitted: bool = False, metadata: Mapping[str, Any] | None = None,
            hash_head: bool = False) -> StoredArtifact:
        """Store what ``open_source()`` yields under ``key``; an identical artifact already there is kept, a
        different one refused (OverwriteError) unless ``replace_uncommitted``: the caller owns the key and
        knows what is there was never committed (a manifest whose snapshot has no summary yet). ``metadata``
        goes into the record of a newly stored artifact (an identical one already there keeps its record);
        ``hash_head`` adds the SHA-256 of the plaintext's first bytes to it (:mod:`workers.artifacts.head`)."""
        existing = self._reuse(key, open_source, known_sha256, require_encryption, not replace_uncommitted)
        if existing is not None:
            return existing
        with open_source() as source:
            head = HeadHash(source) if hash_head else None
            encoded = encode(_Counting(head or source, progress), compress=self.compress,
                             recipient=self.certificate, level=self.level)
            landed = self.backend.put(key, encoded, metadata=_object_metadata(encoded))
        if head is not None:
            metadata = {**(metadata or {}), **head.facts()}
        if known_sha256 and encoded.plaintext_sha256 != known_sha256:
            self._discard(key)
            raise TransientError(f"staged file for {key} changed while it was read (SHA-256 differs from the "
                                 "producer's)", hint="Retried automatically; if it persists the producer's "
                                                     "SHA-256 is wrong.")
        return self._recorded(key, encoded, landed, metadata)

    def put_buffer(self, key: str, body: bytes | bytearray | memoryview, *, new_key: bool = False,
                   require_encryption: bool = False, hash_plaintext: bool = True) -> StoredArtifact:
        """Store ``body``, already in memory (a pack of blobs), under ``key``: encoded in memory in one go and
        uploaded with its stored SHA-256 known up front (S3 signs it instead of hashing the bytes again).
        ``new_key``: ``key`` was never used (a random id), so there is no artifact or record to look for.
        ``hash_plaintext=False`` (only with ``new_key``): the caller checks the content itself (blob ids), so
        the plaintext is not hashed as a whole and the record's ``plaintext_sha256`` is None."""
        if not (hash_plaintext or new_key):
            raise ValueError("hash_plaintext=False needs new_key=True (reuse compares plaintext hashes)")
        if not new_key:
            existing = self._reuse(key, lambda: io.BytesIO(body), hashlib.sha256(body).hexdigest(),
                                   require_encryption)
            if existing is not None:
                return existing
        else:
            self._check_encryption(key, require_encryption)
        return self.put_encoded(key, self.encode_new(body, hash_plaintext=hash_plaintext))

    def encode_new(self, body: bytes | bytearray | memoryview, *, hash_plaintext: bool = True) -> EncodedBuffer:
        """``body`` encoded for a key that was never used (see :meth:`put_buffer`), kept as the encoder's pieces
        (no joined copy when the backend sends pieces one after another); store it with :meth:`put_encoded`.
        Unless ``detached``, the pieces are views of ``body``."""
        return encode_buffer(body, compress=self.compress, recipient=self.certificate, level=self.level,
                             hash_plaintext=hash_plaintext, join=not self.sends_pieces)

    @property
    def sends_pieces(self) -> bool:
        """Whether the backend uploads an encoded buffer piece by piece (no joined copy: ``put_encoded``)."""
        return bool(getattr(self.backend, "sends_pieces", False))

    def put_encoded(self, key: str, encoded: EncodedBuffer) -> StoredArtifact:
        """Upload what :meth:`encode_new` made, verify what landed and write its record."""
        if self.sends_pieces:
            landed = self.backend.put_pieces(key, encoded.pieces, encoded.stored_size,  # type: ignore[attr-defined]
                                             metadata=_object_metadata(encoded), sha256=encoded.stored_sha256)
        else:
            landed = self.backend.put(key, io.BytesIO(encoded.data), size=encoded.stored_size,
                                      metadata=_object_metadata(encoded), sha256=encoded.stored_sha256)
        return self._recorded(key, encoded, landed)

    def _check_encryption(self, key: str, required: bool) -> None:
        if self.certificate is None and required:
            raise ConfigurationError(f"refusing to store {key} unencrypted: no certificate is configured",
                                     hint="Set APPSVC_DR_ENCRYPTION__CERTIFICATE to a PEM certificate "
                                          "(`appsvc-dr keys create` makes one).")

    def _reuse(self, key: str, open_source: Opener, known_sha256: str | None, require_encryption: bool,
               write_once: bool = True) -> StoredArtifact | None:
        """The artifact already stored under ``key`` if it holds the same plaintext; else None, after removing
        a stale record (an old record must never describe the new object). Write-once: a key whose record
        holds a different plaintext is refused (OverwriteError)."""
        self._check_encryption(key, require_encryption)
        try:
            rec = self.record(key, verify=False)        # the writer compares content; readers check signatures
        except IntegrityError:
            rec = None                                  # a damaged record describes nothing: store again
        write_once = write_once and rec is not None and bool(rec.plaintext_sha256)
        if write_once:
            if known_sha256 is None:
                known_sha256 = self._hash(open_source)
            self._refuse_overwrite(rec, known_sha256)  # type: ignore[arg-type]
        existing = self._existing(key, rec, open_source, known_sha256)
        if existing is None and rec is not None:
            if write_once:                      # about to rewrite the same content: the claim must hold
                self._refuse_overwrite(rec, self._hash(open_source))
            self.backend.delete(key + RECORD_SUFFIX)
        return existing

    @staticmethod
    def _hash(open_source: Opener) -> str:
        with open_source() as source:
            return sha256_of(source)[0]

    def _refuse_overwrite(self, rec: StoredArtifact, sha256: str) -> None:
        if sha256 != rec.plaintext_sha256:
            raise OverwriteError(f"refusing to overwrite {rec.key} on {self.backend.name}: it holds an artifact "
                                 f"with different content (SHA-256 {str(rec.plaintext_sha256)[:12]}…, new "
                                 f"{sha256[:12]}…)")

    def _recorded(self, key: str, encoded: EncodingStream | EncodedBuffer, landed: ObjectInfo,
                  metadata: Mapping[str, Any] | None = None) -> StoredArtifact:
        """Verify what landed against what was encoded, then write the record."""
        artifact = StoredArtifact(
            key=key, plaintext_size=encoded.plaintext_size, plaintext_sha256=encoded.plaintext_sha256,
            stored_size=encoded.stored_size, stored_sha256=encoded.stored_sha256, compressed=encoded.compressed,
            encrypted=encoded.encrypted, thumbprint=encoded.thumbprint, verified_by=self.verify_mode,
            stored_at=datetime.now(timezone.utc).isoformat(),
            metadata=dict(metadata) if metadata else None)  # type: ignore[arg-type]
        artifact = self._verify_landed(artifact, landed)
        self._write_record(artifact)
        return artifact

    def _existing(self, key: str, rec: StoredArtifact | None, open_source: Opener,
                  known_sha256: str | None) -> StoredArtifact | None:
        wanted = thumbprint(self.certificate) if self.certificate is not None else None
        if rec is None or rec.thumbprint != wanted:  # a rotated certificate re-encrypts on the next run
            return None
        try:
            info = self.backend.stat(key)
        except ObjectNotFound:
            return None
        if info.size != rec.stored_size or (rec.object_modified and info.modified.isoformat() != rec.object_modified):
            return None  # the object was rewritten since it was verified: store it again
        if known_sha256 is None:
            known_sha256 = self._hash(open_source)
        return replace(rec, deduplicated=True) if rec.plaintext_sha256 and known_sha256 == rec.plaintext_sha256 \
            else None

    def _discard(self, key: str) -> None:
        """Remove a rejected object and any older record of the key: a record only exists with its object."""
        self.backend.delete(key + RECORD_SUFFIX)
        self.backend.delete(key)

    def _verify_landed(self, artifact: StoredArtifact, info: ObjectInfo) -> StoredArtifact:
        """``info`` is what the backend's put reported (it stats the object it wrote)."""
        size = info.size
        problem = None
        if size != artifact.stored_size:
            problem = f"stored size {size} != {artifact.stored_size} bytes sent"
        elif self.verify_mode == "read-back":
            with self.backend.open(artifact.key) as stream:
                digest, _ = sha256_of(stream)
            if digest != artifact.stored_sha256:
                problem = "SHA-256 of the stored bytes differs from what was sent"
        if problem:
            self._discard(artifact.key)
            raise TransientError(f"verification of {artifact.key} on {self.backend.name} failed: {problem}",
                                 hint="The upload is retried; if it keeps failing, check the storage target.")
        return replace(artifact, object_modified=info.modified.isoformat())


def _object_metadata(encoded: EncodingStream | EncodedBuffer) -> dict[str, str]:
    return {"dr-format": "1", "dr-encrypted": str(encoded.encrypted).lower()}
