"""The artifact format: streamed, zstd-compressed, AES-256-GCM-encrypted, data key wrapped by a certificate.

``encode(source, ...)`` and ``decode(source, ...)`` each take a readable binary stream and return one
(``read(n)``), so a storage backend's ``put(key, stream)`` pulls an artifact through without it ever being
held whole: memory stays at a few segments whatever the size. Pipeline: plaintext -> SHA-256 -> zstd
(streaming) -> segments of ``segment_size`` bytes -> AES-256-GCM (STREAM) -> records. The byte layout is
documented in ``workers.storage.crypto``; keys and certificates live in ``workers.storage.keys``.
``encode_buffer(body, ...)`` writes the same format for a body already in memory (a pack), in one go, and
skips zstd when samples of the body do not compress.

Decoding releases plaintext as it goes; only a read that returns ``b""`` without raising means the whole
artifact verified. Restore into a staging location and promote it after EOF. The decoding side lives in
``workers.storage.decoding``; ``decode`` and ``DecodingStream`` are re-exported here.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace as _replace
from typing import Any, BinaryIO, Iterator

import zstandard
from cryptography.x509 import Certificate

from workers.runtime.errors import ConfigurationError
from workers.storage._streams import Hashing, PullStream
from workers.storage.crypto import (CIPHER, DEFAULT_SEGMENT_SIZE, KEY_WRAP, KIND_DATA, KIND_FINAL,
                                    MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, NO_HASH, ArtifactHeader, IntegrityError,
                                    NotAnArtifactError, SegmentCipher, Trailer, UnsupportedArtifactError,
                                    new_data_key, new_nonce_prefix, record_head, read_exact, read_header,
                                    wrap_key)
from workers.storage.decoding import DecodingStream, decode
from workers.storage.keys import (KeyLoadError, KeyNotFoundError, KeyRing, WrongPasswordError,
                                  check_rsa, generate_self_signed, load_certificate, spki_sha256,
                                  thumbprint)

__all__ = ["encode", "decode", "encode_buffer", "read_header", "EncodingStream", "EncodedBuffer", "DecodingStream", "ArtifactHeader",
           "IntegrityError", "NotAnArtifactError", "UnsupportedArtifactError", "KeyNotFoundError",
           "KeyLoadError", "WrongPasswordError", "KeyRing", "load_certificate", "thumbprint",
           "generate_self_signed", "DEFAULT_SEGMENT_SIZE"]

SAMPLES, SAMPLE_BYTES, MIN_SAVING = 16, 16 << 10, 0.02     # encode_buffer's look at the data before zstd


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
        self._plain = Hashing(source)
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
