"""The reading side of the artifact format (see ``workers.storage.codec``, which re-exports it): ``decode`` and
the :class:`DecodingStream` it returns, which releases plaintext as it goes and verifies every segment, the
trailer's hashes and sizes, and what the caller expects."""
from __future__ import annotations

import hashlib
from typing import Any, BinaryIO

import zstandard

from workers.storage._streams import Hashing, PullStream
from workers.storage.crypto import (KIND_DATA, NO_HASH, TAG_BYTES, ArtifactHeader, IntegrityError, SegmentCipher,
                                    Trailer, read_header, read_record, unwrap_key)
from workers.storage.keys import KeyNotFoundError, KeyRing

ZSTD_MAX_WINDOW = 1 << 23  # levels 1..19 never need more; refuses hostile frames asking for huge windows
_DECODE_CHUNK = 256 << 10


class _Segments:
    """Reader over the opened (authenticated / checksummed) data segments; stops at the final one."""

    def __init__(self, source: Hashing, header: ArtifactHeader, cipher: SegmentCipher | None) -> None:
        self._source, self._header, self._cipher = source, header, cipher
        self._max = header.segment_size + (TAG_BYTES if cipher else 0)
        self._buf, self._pos, self._index = b"", 0, 0
        self.trailer: Trailer | None = None

    def read(self, size: int = -1) -> bytes:
        while self._pos >= len(self._buf):
            if self.trailer is not None:
                return b""
            self._load()
        end = len(self._buf) if size is None or size < 0 else self._pos + size
        piece = self._buf[self._pos:end]
        self._pos += len(piece)
        return piece

    def _load(self) -> None:
        before = self._source.digest()
        kind, payload = read_record(self._source, self._max)  # type: ignore[arg-type]
        if self._cipher is not None:
            payload = self._cipher.open(self._index, kind, payload)
        self._index += 1
        if kind == KIND_DATA:
            if not payload or len(payload) > self._header.segment_size:
                raise IntegrityError(f"segment {self._index - 1} has an invalid size: the artifact is corrupt")
            self._buf, self._pos = payload, 0
            return
        trailer = Trailer.unpack(payload)
        if before is not None and trailer.prefix_sha256 != before:     # None: not hashed (decode's hash_stored)
            raise IntegrityError("the stored bytes do not match the checksum in the final segment: the "
                                 "artifact is corrupt, reordered or was altered")
        self.trailer, self._buf, self._pos = trailer, b"", 0


class DecodingStream(PullStream):
    """Reads as the plaintext, verifying as it goes. After EOF: plaintext_sha256/size, stored_sha256/size."""

    def __init__(self, source: BinaryIO, *, keys: KeyRing | None, expected_sha256: str | None = None,
                 expected_size: int | None = None, hash_stored: bool = True) -> None:
        super().__init__()
        self._src = Hashing(source, hash_stored)
        self.header = header = read_header(self._src)  # type: ignore[arg-type]
        self.encrypted, self.compressed = header.encrypted, header.compressed
        self.thumbprint = header.thumbprint_sha1
        cipher = None
        if header.encrypted:
            ident = header.thumbprint_sha1 or header.spki_sha256 or "?"
            key = keys.find(header.thumbprint_sha1, header.thumbprint_sha256, header.spki_sha256) if keys else None
            if key is None:
                raise KeyNotFoundError(ident, subject=header.subject, available=keys.names if keys else ())
            data_key = unwrap_key(key, header.wrapped_key or b"", ident)
            cipher = SegmentCipher(data_key, header.nonce_prefix or b"", header.digest)
        self._segments = _Segments(self._src, header, cipher)
        self._inner: Any = self._segments
        if header.compressed:
            self._inner = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).stream_reader(
                self._segments, read_across_frames=False, closefd=False)
        self._expected = (expected_sha256.lower() if expected_sha256 else None, expected_size)
        # a version 2 artifact without a plaintext hash is only hashed when the caller expects a hash
        self._plain = hashlib.sha256() if header.hashes_plaintext or expected_sha256 else None
        self._size = 0
        self.plaintext_sha256: str | None = None
        self.plaintext_size: int | None = None
        self.stored_sha256: str | None = None
        self.stored_size: int | None = None

    def _next(self) -> bytes | None:
        try:      # uncompressed: a whole segment as it was opened (no slice copied out of it)
            data = self._inner.read(_DECODE_CHUNK if self.compressed else -1)
        except zstandard.ZstdError:
            raise IntegrityError("the compressed data is corrupt") from None
        if data:
            if self._plain is not None:
                self._plain.update(data)
            self._size += len(data)
            want = self._expected[1]
            if want is not None and self._size > want:     # at once: a replaced body or a zstd bomb is not read on
                raise IntegrityError(f"the decoded data exceeds the {want} bytes the catalogue expects: the "
                                     "artifact was replaced or is corrupt")
            return data
        self._finish()
        return None

    def _finish(self) -> None:
        if self._segments.read(1):
            raise IntegrityError("data follows the end of the compressed stream: the artifact is corrupt")
        if self._src.read(1):
            raise IntegrityError("data follows the final segment: the artifact is corrupt or was appended to")
        trailer = self._segments.trailer
        assert trailer is not None
        digest = self._plain.digest() if self._plain is not None else None
        unhashed = not self.header.hashes_plaintext         # then the trailer holds NO_HASH
        recorded = (digest if trailer.plaintext_sha256 == NO_HASH else b"") if unhashed else trailer.plaintext_sha256
        if trailer.plaintext_size != self._size or recorded != digest:
            raise IntegrityError("the decoded data does not match the size/SHA-256 recorded in the artifact")
        want_sha, want_size = self._expected
        if want_size is not None and want_size != self._size:
            raise IntegrityError(f"the decoded data has {self._size} bytes, the catalogue expects {want_size}")
        if want_sha is not None and digest is not None and want_sha != digest.hex():
            raise IntegrityError("the decoded data's SHA-256 differs from the one the catalogue expects")
        self.plaintext_sha256, self.plaintext_size = digest.hex() if digest is not None else None, self._size
        stored = self._src.digest()
        self.stored_sha256, self.stored_size = stored.hex() if stored is not None else None, self._src.size


def decode(source: BinaryIO, *, keys: KeyRing | None, expected_sha256: str | None = None,
           expected_size: int | None = None, hash_stored: bool = True) -> DecodingStream:
    """Stream an artifact back to plaintext. Reads the header now (so NotAnArtifactError, KeyNotFoundError
    surface at once); integrity errors surface on the read that meets them, at the latest at EOF. Without
    ``hash_stored`` the stored bytes are not hashed (``stored_sha256`` stays None) nor compared with the final
    segment's checksum of them (AES-GCM still authenticates every segment, its number and kind when encrypted):
    only for a caller that proves every plaintext byte it uses by a hash of its own (a restore's blobs, by their
    ids)."""
    return DecodingStream(source, keys=keys, expected_sha256=expected_sha256, expected_size=expected_size,
                          hash_stored=hash_stored)
