"""Reading artifacts back: the record first (signed when verify keys are configured, always for secrets), then
the stored bytes decoded and verified as they stream (``codec.decode``): every hash checked by the time the caller
has read to the end. Mixed into :class:`~workers.artifacts.service.ArtifactStore` (which provides ``backend``,
``record``, ``trust`` and ``_warned``)."""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from typing import BinaryIO, Callable, ContextManager, Iterator

from workers.artifacts.records import StoredArtifact, encrypted_only
from workers.runtime.errors import PermanentError
from workers.storage.base import ObjectNotFound, StorageBackend
from workers.storage.codec import IntegrityError, KeyRing, decode
from workers.storage.readahead import ReadAhead
from workers.storage.signing import SignatureError, Trust

log = logging.getLogger("appsvc_dr.artifacts")
CHUNK = 1024 * 1024
Progress = Callable[[int], None]


class _Counting(io.RawIOBase):
    """Pass-through reader reporting bytes read to ``progress``."""

    def __init__(self, source: BinaryIO, progress: Progress | None) -> None:
        self._source, self._progress = source, progress

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        if data and self._progress:
            self._progress(len(data))
        return data

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def sha256_of(stream: BinaryIO) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


class ArtifactReading:
    backend: StorageBackend
    trust: Trust
    _warned: bool
    record: Callable[..., StoredArtifact | None]

    def _required_record(self, key: str, decrypting: bool = False) -> StoredArtifact:
        """The record of an artifact about to be read. Signatures are required when verify keys are configured
        and always for secrets; a restore (``decrypting``) without verify keys is warned about once."""
        if decrypting and not self.trust.verifies and not self._warned:
            self._warned = True
            log.warning("restoring from %s without checking signatures: no verify key is configured (set "
                        "APPSVC_DR_ENCRYPTION__VERIFY_KEYS to the workers' public verify key)", self.backend.name)
        rec = self.record(key, required=encrypted_only(key))
        if rec is None:
            raise ObjectNotFound(f"no artifact record for {key} on {self.backend.name}",
                                 hint="List artifacts with `appsvc-dr artifacts list`; the upload may not have "
                                      "finished.")
        return rec

    def open_plain(self, key: str, *, keys: KeyRing | None = None, progress: Progress | None = None,
                   read_ahead: bool = False, check_stored: bool = True) -> ContextManager[BinaryIO]:
        """A readable stream of the plaintext of ``key``. Reading it to the end verifies every hash; a
        mismatch raises from ``read`` (or on leaving the block), so never trust data not read to EOF.
        ``read_ahead``: the stored bytes are received on a thread of their own while the caller decodes (for one
        large sequential read, e.g. a database dump; a few MiB more memory). ``check_stored``: see :meth:`get`."""
        return self._plain(self._required_record(key, keys is not None), keys, progress, check_stored,
                           read_ahead=read_ahead)

    @contextlib.contextmanager
    def _plain(self, rec: StoredArtifact, keys: KeyRing | None, progress: Progress | None,
               check_stored: bool = True, read_ahead: bool = False) -> Iterator[BinaryIO]:
        if encrypted_only(rec.key) and not rec.encrypted:
            raise SignatureError(f"{rec.key} is stored unencrypted: secrets are always encrypted, so it was not "
                                 "written by a worker", hint="Restore another secrets version or set; find out "
                                                             "who can write to the store.")
        with self.backend.open(rec.key) as stream, contextlib.ExitStack() as ahead:
            source: BinaryIO = stream
            if read_ahead:
                source = ahead.enter_context(contextlib.closing(ReadAhead(stream)))   # type: ignore[arg-type]
            decoded = decode(_Counting(source, progress), keys=keys, expected_sha256=rec.plaintext_sha256,
                             expected_size=rec.plaintext_size, hash_stored=check_stored)
            if decoded.encrypted != rec.encrypted:
                raise IntegrityError(f"{rec.key}: the artifact's header and its record disagree on encryption")
            yield decoded
        if decoded.stored_sha256 is not None and decoded.stored_sha256 != rec.stored_sha256:
            raise PermanentError(f"{rec.key}: stored bytes do not match the record",
                                 hint="The artifact or its record was altered; restore from another backup set.")

    def get(self, key: str, out: BinaryIO, *, keys: KeyRing | None = None,
            progress: Progress | None = None, check_stored: bool = True) -> StoredArtifact:
        """Stream the plaintext of ``key`` into ``out``, verifying hashes; raises on any mismatch. Without
        ``check_stored`` the stored bytes' SHA-256 is neither computed nor compared with the record: only for a
        caller that proves every byte it uses by a hash of its own (see ``codec.decode``)."""
        return self._copy(self._required_record(key, keys is not None), out, keys, progress, check_stored)

    def _copy(self, rec: StoredArtifact, out: BinaryIO, keys: KeyRing | None,
              progress: Progress | None = None, check_stored: bool = True) -> StoredArtifact:
        with self._plain(rec, keys, progress, check_stored) as plain:
            while chunk := plain.read(CHUNK):
                out.write(chunk)
        return rec

    def check(self, key: str, *, keys: KeyRing | None = None) -> StoredArtifact:
        """Re-read ``key`` completely (like `restic check --read-data`); decrypts too when keys are given."""
        rec = self._required_record(key, keys is not None)
        if keys is not None or not rec.encrypted:
            return self._copy(rec, _Discard(), keys)
        with self.backend.open(key) as stream:
            digest, size = sha256_of(stream)
        if (digest, size) != (rec.stored_sha256, rec.stored_size):
            raise PermanentError(f"{key}: stored bytes do not match the record (size {size}, expected "
                                 f"{rec.stored_size})", hint="The artifact was altered or truncated in the "
                                                             "store; restore from another backup set.")
        return rec


class _Discard(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        return len(data)
