"""The artifact format: streamed, zstd-compressed, AES-256-GCM-encrypted, data key wrapped by a certificate.

``encode(source, ...)`` and ``decode(source, ...)`` each take a readable binary stream and return one
(``read(n)``), so a storage backend's ``put(key, stream)`` pulls an artifact through without it ever being
held whole: memory stays at a few segments whatever the size. Pipeline: plaintext -> SHA-256 -> zstd
(streaming) -> segments of ``segment_size`` bytes -> AES-256-GCM (STREAM) -> records. The byte layout is
documented in ``workers.storage.crypto``; keys and certificates live in ``workers.storage.keys``.
``encode_buffer(body, ...)`` writes the same format for a body already in memory (a pack), in one go, and
skips zstd when samples of the body do not compress.

Decoding releases plaintext as it goes; only a read that returns ``b""`` without raising means the whole
artifact verified. Restore into a staging location and promote it after EOF.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace as _replace
from typing import Any, BinaryIO, Iterator

import zstandard
from cryptography.x509 import Certificate

from workers.runtime.errors import ConfigurationError
from workers.storage._streams import PullStream
from workers.storage.crypto import (CIPHER, DEFAULT_SEGMENT_SIZE, KEY_WRAP, KIND_DATA, KIND_FINAL,
                                    MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, TAG_BYTES, ArtifactHeader,
                                    IntegrityError, NotAnArtifactError, SegmentCipher, Trailer,
                                    UnsupportedArtifactError, new_data_key, new_nonce_prefix, record_head,
                                    read_exact, read_header, read_record, unwrap_key, wrap_key)
from workers.storage.keys import (KeyLoadError, KeyNotFoundError, KeyRing, WrongPasswordError,
                                  check_rsa, generate_self_signed, load_certificate, spki_sha256,
                                  thumbprint)

__all__ = ["encode", "decode", "encode_buffer", "read_header", "EncodingStream", "EncodedBuffer", "DecodingStream", "ArtifactHeader",
           "IntegrityError", "NotAnArtifactError", "UnsupportedArtifactError", "KeyNotFoundError",
           "KeyLoadError", "WrongPasswordError", "KeyRing", "load_certificate", "thumbprint",
           "generate_self_signed", "DEFAULT_SEGMENT_SIZE"]

ZSTD_MAX_WINDOW = 1 << 23  # levels 1..19 never need more; refuses hostile frames asking for huge windows
_DECODE_CHUNK = 256 << 10
NO_HASH = bytes(32)                     # the trailer's plaintext hash in an artifact without one
SAMPLES, SAMPLE_BYTES, MIN_SAVING = 16, 16 << 10, 0.02     # encode_buffer's look at the data before zstd


class _Hashing:
    """Pass-through reader that counts and hashes what flows through it (only counts, without ``hashing``)."""

    def __init__(self, source: BinaryIO, hashing: bool = True) -> None:
        self._source, self.size, self._sha = source, 0, hashlib.sha256() if hashing else None

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        if data:
            self.size += len(data)
            if self._sha is not None:
                self._sha.update(data)
        return data or b""

    def digest(self) -> bytes | None:
        return self._sha.digest() if self._sha is not None else None


class _Writer:
    """The writing side of one artifact: its header and cipher, records numbered in order, and the SHA-256
    and size of every byte emitted."""

    def __init__(self, *, compress: bool, recipient: Certificate | None, level: int, segment_size: int,
                 hash_plaintext: bool = True) -> None:
        if not 1 <= level <= 19:
            raise ConfigurationError(f"zstd level {level} out of range: use 1..19 (3 is the default)")
        if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
            raise ConfigurationError(f"segment size {segment_size} out of range {MIN_SEGMENT_SIZE}.."
                                     f"{MAX_SEGMENT_SIZE}")
        header = ArtifactHeader(compression="zstd" if compress else "none", segment_size=segment_size,
                                plaintext_hash="sha256" if hash_plaintext else "none")
        if recipient is not None:
            data_key, prefix, public_key = new_data_key(), new_nonce_prefix(), recipient.public_key()
            check_rsa(public_key, f"certificate {thumbprint(recipient)}")
            header = _replace(header, cipher=CIPHER, key_wrap=KEY_WRAP, thumbprint_sha1=thumbprint(recipient),
                              thumbprint_sha256=thumbprint(recipient, "sha256"),
                              spki_sha256=spki_sha256(public_key),  # type: ignore[arg-type]
                              subject=recipient.subject.rfc4514_string(),
                              wrapped_key=wrap_key(public_key, data_key),  # type: ignore[arg-type]
                              nonce_prefix=prefix)
        self.header = header.build()
        self.cipher = SegmentCipher(data_key, prefix, self.header.digest) if recipient is not None else None
        self.level, self.sha, self.size, self._index = level, hashlib.sha256(), 0, 0

    def zstd(self) -> zstandard.ZstdCompressor:
        return zstandard.ZstdCompressor(level=self.level, write_checksum=True)

    def emit(self, data: Any) -> Any:
        self.sha.update(data)
        self.size += len(data)
        return data

    def record(self, kind: int, payload: Any) -> tuple[bytes, Any]:
        """One record as (head, payload) pieces, sealed when encrypting."""
        if self.cipher is not None:
            payload = self.cipher.seal(self._index, kind, payload)
        self._index += 1
        return self.emit(record_head(kind, len(payload))), self.emit(payload)

    def final(self, plaintext_size: int, plaintext_sha256: bytes) -> tuple[bytes, Any]:
        return self.record(KIND_FINAL, Trailer(plaintext_size, plaintext_sha256, self.sha.digest()).pack())


class _Result:
    """What an encoder knows once done (the fields of an artifact's record)."""

    plaintext_sha256: str | None = None
    plaintext_size: int | None = None
    stored_sha256: str | None = None
    stored_size: int | None = None

    def _describe(self, writer: _Writer) -> None:
        self.header = writer.header
        self.encrypted, self.compressed = writer.header.encrypted, writer.header.compressed
        self.thumbprint = writer.header.thumbprint_sha1

    def _done(self, writer: _Writer, plaintext_size: int, plaintext_sha256: bytes | None) -> None:
        self.plaintext_sha256 = plaintext_sha256.hex() if plaintext_sha256 is not None else None
        self.plaintext_size = plaintext_size
        self.stored_sha256, self.stored_size = writer.sha.hexdigest(), writer.size


class EncodingStream(PullStream, _Result):
    """Reads as the encoded artifact. After EOF: plaintext_sha256/size and stored_sha256/size are set."""

    def __init__(self, source: BinaryIO, *, compress: bool, recipient: Certificate | None, level: int,
                 segment_size: int) -> None:
        super().__init__()
        self._w = _Writer(compress=compress, recipient=recipient, level=level, segment_size=segment_size)
        self._describe(self._w)
        self._plain = _Hashing(source)
        self._inner: Any = self._plain
        if compress:
            self._inner = self._w.zstd().stream_reader(self._plain, closefd=False)
        self._started = self._finished = False

    def _next(self) -> bytes | None:
        if not self._started:
            self._started = True
            return self._w.emit(self.header.raw)
        if self._finished:
            return None
        data = read_exact(self._inner, self.header.segment_size)
        if data:
            return b"".join(self._w.record(KIND_DATA, data))
        record = b"".join(self._w.final(self._plain.size, self._plain.digest()))
        self._finished = True
        self._done(self._w, self._plain.size, self._plain.digest())
        return record


class EncodedBuffer(_Result):
    """A whole artifact encoded in memory: ``data`` plus its record fields (see :func:`encode_buffer`)."""

    def __init__(self, body: Any, *, compress: bool, recipient: Certificate | None, level: int,
                 segment_size: int, hash_plaintext: bool = True, join: bool = True) -> None:
        view = memoryview(body).cast("B")
        compress = compress and _worth_compressing(view, level)
        # neither compressed nor encrypted: the data records are views of ``body`` (see ``detached``)
        self.detached = compress or recipient is not None
        w = _Writer(compress=compress, recipient=recipient, level=level, segment_size=segment_size,
                    hash_plaintext=hash_plaintext)
        self._describe(w)
        pieces: list[Any] = [w.emit(self.header.raw)]
        for segment in _compressed(w, view) if compress else \
                (view[start:start + segment_size] for start in range(0, len(view), segment_size)):
            pieces += w.record(KIND_DATA, segment)
        plain = hashlib.sha256(view).digest() if hash_plaintext else None
        pieces += w.final(len(view), plain or NO_HASH)
        # ``join``: one bytes object (``data``); else the pieces as made (``pieces``: no copy of the whole)
        self.pieces: list[Any] = [b"".join(pieces)] if join else pieces
        self._done(w, len(view), plain)

    @property
    def data(self) -> bytes:
        """The whole artifact as one bytes object (joined now unless it was made joined)."""
        return self.pieces[0] if len(self.pieces) == 1 else b"".join(self.pieces)


class _Segments:
    """Reader over the opened (authenticated / checksummed) data segments; stops at the final one."""

    def __init__(self, source: _Hashing, header: ArtifactHeader, cipher: SegmentCipher | None) -> None:
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
        self._src = _Hashing(source, hash_stored)
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
        try:
            data = self._inner.read(_DECODE_CHUNK)
        except zstandard.ZstdError:
            raise IntegrityError("the compressed data is corrupt") from None
        if data:
            if self._plain is not None:
                self._plain.update(data)
            self._size += len(data)
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


def encode(source: BinaryIO, *, compress: bool, recipient: Certificate | None, level: int = 3,
           segment_size: int = DEFAULT_SEGMENT_SIZE) -> EncodingStream:
    """Stream ``source`` into an artifact: zstd (if ``compress``), then AES-256-GCM segments with a data key
    wrapped for ``recipient`` (if given). Nothing is read until the result is read."""
    return EncodingStream(source, compress=compress, recipient=recipient, level=level, segment_size=segment_size)


def _worth_compressing(view: memoryview, level: int) -> bool:
    """Whether zstd saves at least MIN_SAVING on samples spread over ``view``. A pack of content that is
    compressed already (media, archives) is then stored as it is (the header says so) instead of spending a
    zstd pass for nothing."""
    if len(view) <= SAMPLES * SAMPLE_BYTES:
        return True
    step = len(view) // SAMPLES
    sample = b"".join(view[i * step:i * step + SAMPLE_BYTES] for i in range(SAMPLES))
    return len(zstandard.ZstdCompressor(level=level).compress(sample)) <= (1 - MIN_SAVING) * len(sample)


def _compressed(writer: _Writer, view: memoryview) -> Iterator[bytes]:
    """zstd of ``view`` in segments of exactly segment_size bytes (the last one shorter), as streaming makes."""
    chunker = writer.zstd().chunker(size=len(view), chunk_size=writer.header.segment_size)
    yield from chunker.compress(view)
    yield from chunker.finish()


def encode_buffer(body: Any, *, compress: bool, recipient: Certificate | None, level: int = 3,
                  segment_size: int = DEFAULT_SEGMENT_SIZE, hash_plaintext: bool = True,
                  join: bool = True) -> EncodedBuffer:
    """``encode`` for a body already in memory (a pack of blobs), into memory: the same format, but each hash
    and the compression run as few C calls over whole buffers (the GIL released) instead of through stream
    layers, the result holds the stored SHA-256 before anything is sent, and a body whose samples do not
    compress is stored uncompressed. ``hash_plaintext=False``: the caller vouches for the content otherwise
    (a pack of blobs named by their SHA-256): a version 2 artifact without the plaintext hash (no pass over
    the body for it; see ``crypto``). ``join=False``: the result keeps its pieces (``pieces``) instead of one
    joined copy, for a store that sends them one after another; unless ``detached`` (compressed or encrypted)
    they are views of ``body``, which must then outlive them."""
    return EncodedBuffer(body, compress=compress, recipient=recipient, level=level, segment_size=segment_size,
                         hash_plaintext=hash_plaintext, join=join)


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
