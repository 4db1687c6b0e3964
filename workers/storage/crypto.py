"""The byte layout of an artifact and its cryptography: header, records, STREAM over AES-256-GCM, the
certificate-wrapped data key and the trailer. ``workers.storage.codec`` builds the streams on top.

All integers are big-endian::

    header   magic "\\x89ASDRAF\\n" (8) | version u8 (1; 2: see below) | body length u32
             | body (UTF-8 JSON, <= 64 KiB) | SHA-256 of all of the above (32): the "header hash", bound into every encrypted segment
    records  kind u8 (0 = data, 1 = final) | payload length u32 | payload
    final    the last record; its (plain or opened) payload is the trailer:
             plaintext size u64 | plaintext SHA-256 (32) | SHA-256 of all stored bytes before this record

The JSON body names the algorithms (``compression`` zstd|none, ``cipher`` aes-256-gcm-stream|none,
``key_wrap`` rsa-oaep-sha256|none) and ``segment_size`` (bytes of compressed data per data segment), and
when encrypted the recipient certificate (``thumbprint_sha1`` as Windows shows it, ``thumbprint_sha256``,
``spki_sha256`` of its public key, ``subject``), the ``wrapped_key`` and the ``nonce_prefix`` (base64).
Unknown body keys are ignored. Version 2 differs in one point: a body with ``plaintext_hash`` ``none`` says
the trailer's plaintext SHA-256 is all zeros, not computed, because the writer vouches for the content
otherwise (a pack of blobs, each named by its own SHA-256 and checked on every read); the stored-bytes hash,
the size, zstd's checksum and, when encrypted, every segment's authentication still apply. Writers use
version 1 for everything else, so older readers keep reading it. Encrypted payloads are

    AES-256-GCM(data_key, nonce = nonce_prefix (8) || index (u32),
                aad = header hash (32) || index (u32) || kind (u8))  ->  ciphertext || tag (16)

with ``index`` counting records from 0, so a changed header, a reordered, swapped, dropped or altered
segment, or a stream cut before the final segment fails authentication. The data key is fresh for every
artifact and wrapped with RSA-OAEP-SHA-256 under the recipient certificate's public key. Unencrypted
artifacts use the same records with plain payloads; the header checksum and the trailer's hashes catch
accidental damage there (not deliberate tampering: only encryption authenticates).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from workers.runtime.errors import PermanentError

MAGIC = b"\x89ASDRAF\n"
VERSION, VERSIONS = 1, (1, 2)
PLAINTEXT_HASHES = ("sha256", "none")
DEFAULT_SEGMENT_SIZE = 1 << 20
MIN_SEGMENT_SIZE, MAX_SEGMENT_SIZE = 1 << 10, 16 << 20
MAX_HEADER_BODY = 64 << 10
CIPHER, KEY_WRAP = "aes-256-gcm-stream", "rsa-oaep-sha256"
DATA_KEY_BYTES = 32
NONCE_PREFIX_BYTES = 8
TAG_BYTES = 16
KIND_DATA = 0
KIND_FINAL = 1
MAX_SEGMENTS = 2**32 - 1
_PREFIX = struct.Struct(">8sBI")
_RECORD_HEAD = struct.Struct(">BI")
_TRAILER = struct.Struct(">Q32s32s")
TRAILER_BYTES = _TRAILER.size
NO_HASH = bytes(32)                     # the trailer's plaintext hash in an artifact without one
_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


class IntegrityError(PermanentError):
    """The artifact is damaged, truncated, reordered or was altered."""

    default_hint = ("The artifact is corrupt or was altered; re-fetch it (check the storage backend and the "
                    "network path); if it persists restore from another backup set.")


def read_exact(source: BinaryIO, size: int) -> bytes:
    """Read exactly ``size`` bytes unless EOF comes first (sources may return short reads)."""
    first = source.read(size)
    if not first or len(first) == size:
        return first or b""
    parts, have = [first], len(first)
    while have < size:
        chunk = source.read(size - have)
        if not chunk:
            break
        parts.append(chunk)
        have += len(chunk)
    return b"".join(parts)


class NotAnArtifactError(PermanentError):
    """The stream does not start with the artifact magic bytes."""

    default_hint = ("This object is not an appsvc-dr artifact (wrong magic bytes): check the storage key or "
                    "path being restored; it may be a foreign or partially uploaded file.")


class UnsupportedArtifactError(PermanentError):
    """A format version or algorithm this build does not know."""

    default_hint = ("The artifact was written by a newer appsvc-dr (unknown format version or algorithm): "
                    "restore it with an appsvc-dr at least as new as the one that wrote it.")


@dataclass(frozen=True)
class ArtifactHeader:
    """The parsed header. ``raw`` is its exact bytes once built or read; ``digest`` the header hash."""

    compression: str = "none"
    cipher: str = "none"
    key_wrap: str = "none"
    segment_size: int = DEFAULT_SEGMENT_SIZE
    thumbprint_sha1: str | None = None
    thumbprint_sha256: str | None = None
    spki_sha256: str | None = None
    subject: str | None = None
    wrapped_key: bytes | None = None
    nonce_prefix: bytes | None = None
    version: int = VERSION
    plaintext_hash: str = "sha256"
    raw: bytes = field(default=b"", repr=False)

    @property
    def encrypted(self) -> bool:
        return self.cipher != "none"

    @property
    def compressed(self) -> bool:
        return self.compression != "none"

    @property
    def hashes_plaintext(self) -> bool:
        return self.plaintext_hash == "sha256"

    @property
    def digest(self) -> bytes:
        return self.raw[-32:]

    def build(self) -> "ArtifactHeader":
        """A copy with ``raw`` (the serialized header) filled in."""
        body: dict[str, Any] = {"compression": self.compression, "cipher": self.cipher,
                                "key_wrap": self.key_wrap, "segment_size": self.segment_size}
        if self.encrypted:
            body.update(thumbprint_sha1=self.thumbprint_sha1, thumbprint_sha256=self.thumbprint_sha256,
                        spki_sha256=self.spki_sha256, subject=self.subject,
                        wrapped_key=base64.b64encode(self.wrapped_key or b"").decode("ascii"),
                        nonce_prefix=base64.b64encode(self.nonce_prefix or b"").decode("ascii"))
        version = self.version
        if not self.hashes_plaintext:
            body["plaintext_hash"], version = self.plaintext_hash, 2
        blob = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
        head = _PREFIX.pack(MAGIC, version, len(blob)) + blob
        return replace(self, version=version, raw=head + hashlib.sha256(head).digest())


def read_header(source: BinaryIO) -> ArtifactHeader:
    """Read and check the header at the start of ``source`` (leaves the stream after it)."""
    prefix = read_exact(source, _PREFIX.size)
    if prefix[:len(MAGIC)] != MAGIC[:len(prefix)]:
        raise NotAnArtifactError("not an appsvc-dr artifact: the magic bytes do not match")
    if len(prefix) < _PREFIX.size:
        raise IntegrityError(f"the artifact is truncated: {len(prefix)} bytes, not even a whole header")
    _magic, version, length = _PREFIX.unpack(prefix)
    if length > MAX_HEADER_BODY:
        raise IntegrityError(f"header body of {length} bytes exceeds {MAX_HEADER_BODY}: the header is corrupt")
    rest = read_exact(source, length + 32)
    if len(rest) < length + 32:
        raise IntegrityError("the artifact ends inside its header: it is truncated")
    raw = prefix + rest
    if hashlib.sha256(raw[:-32]).digest() != raw[-32:]:
        raise IntegrityError("the artifact header fails its checksum: the header is corrupt or was altered")
    if version not in VERSIONS:
        raise UnsupportedArtifactError(f"artifact format version {version} is not supported (this build "
                                       f"reads versions {', '.join(map(str, VERSIONS))})")
    try:
        body = json.loads(raw[_PREFIX.size:-32])
        b64 = {k: base64.b64decode(body[k], validate=True) for k in ("wrapped_key", "nonce_prefix") if k in body}
        header = ArtifactHeader(
            compression=body["compression"], cipher=body["cipher"], key_wrap=body["key_wrap"],
            segment_size=int(body["segment_size"]), thumbprint_sha1=body.get("thumbprint_sha1"),
            thumbprint_sha256=body.get("thumbprint_sha256"), spki_sha256=body.get("spki_sha256"),
            subject=body.get("subject"), version=version, raw=raw,
            plaintext_hash=body.get("plaintext_hash", "sha256") if version >= 2 else "sha256", **b64)
    except (ValueError, KeyError, TypeError):
        raise IntegrityError("the artifact header is malformed") from None
    for name, value, known in (("compression", header.compression, ("none", "zstd")),
                               ("cipher", header.cipher, ("none", CIPHER)),
                               ("key wrap", header.key_wrap, ("none", KEY_WRAP)),
                               ("plaintext hash", header.plaintext_hash, PLAINTEXT_HASHES)):
        if value not in known:
            raise UnsupportedArtifactError(f"unsupported {name} algorithm {value!r}")
    if not MIN_SEGMENT_SIZE <= header.segment_size <= MAX_SEGMENT_SIZE:
        raise IntegrityError(f"segment size {header.segment_size} out of range: the header is corrupt")
    if header.encrypted and (header.key_wrap == "none" or not header.wrapped_key or not header.nonce_prefix
                             or not (header.thumbprint_sha1 or header.spki_sha256)):
        raise IntegrityError("the artifact header lacks the wrapped key or certificate: it is malformed")
    return header


def new_data_key() -> bytes:
    return os.urandom(DATA_KEY_BYTES)


def new_nonce_prefix() -> bytes:
    return os.urandom(NONCE_PREFIX_BYTES)


def wrap_key(public_key: rsa.RSAPublicKey, data_key: bytes) -> bytes:
    return public_key.encrypt(data_key, _OAEP)


def unwrap_key(private_key: rsa.RSAPrivateKey, wrapped: bytes, thumbprint: str) -> bytes:
    try:
        data_key = private_key.decrypt(wrapped, _OAEP)
    except ValueError:
        raise IntegrityError(f"the wrapped data key does not open with the key of certificate {thumbprint}: "
                             "the artifact header was altered") from None
    if len(data_key) != DATA_KEY_BYTES:
        raise IntegrityError("the wrapped data key has the wrong length: the artifact header was altered")
    return data_key


class SegmentCipher:
    """Seals and opens segments of one artifact (one data key, one nonce prefix, one header)."""

    def __init__(self, data_key: bytes, nonce_prefix: bytes, header_sha256: bytes) -> None:
        if len(data_key) != DATA_KEY_BYTES or len(nonce_prefix) != NONCE_PREFIX_BYTES:
            raise ValueError("bad data key or nonce prefix length")
        self._aead = AESGCM(data_key)
        self._prefix = nonce_prefix
        self._header = header_sha256

    def _nonce_aad(self, index: int, kind: int) -> tuple[bytes, bytes]:
        if not 0 <= index <= MAX_SEGMENTS:
            raise IntegrityError(f"segment index {index} out of range")
        counter = struct.pack(">I", index)
        return self._prefix + counter, self._header + counter + bytes([kind])

    def seal(self, index: int, kind: int, plaintext: bytes) -> bytes:
        nonce, aad = self._nonce_aad(index, kind)
        return self._aead.encrypt(nonce, plaintext, aad)

    def open(self, index: int, kind: int, payload: bytes) -> bytes:
        nonce, aad = self._nonce_aad(index, kind)
        try:
            return self._aead.decrypt(nonce, payload, aad)
        except InvalidTag:
            what = "final segment" if kind == KIND_FINAL else f"segment {index}"
            raise IntegrityError(f"{what} failed authentication: the artifact was altered, reordered or "
                                 "truncated, or its header was changed") from None


def record_head(kind: int, length: int) -> bytes:
    return _RECORD_HEAD.pack(kind, length)


def read_record(source: BinaryIO, max_payload: int) -> tuple[int, bytes]:
    """The next record as (kind, payload). A stream ending before the final record is an IntegrityError."""
    head = read_exact(source, _RECORD_HEAD.size)
    if len(head) < _RECORD_HEAD.size:
        raise IntegrityError("the artifact ends before its final segment: it is truncated")
    kind, length = _RECORD_HEAD.unpack(head)
    if kind not in (KIND_DATA, KIND_FINAL):
        raise IntegrityError(f"unknown segment kind {kind}: the artifact is corrupt")
    if length > max_payload:
        raise IntegrityError(f"segment of {length} bytes exceeds the limit of {max_payload}: the artifact is "
                             "corrupt")
    payload = read_exact(source, length)
    if len(payload) < length:
        raise IntegrityError("the artifact ends in the middle of a segment: it is truncated")
    return kind, payload


@dataclass(frozen=True)
class Trailer:
    """The final segment's content: plaintext size and SHA-256, and SHA-256 of all stored bytes before
    the final record."""

    plaintext_size: int
    plaintext_sha256: bytes
    prefix_sha256: bytes

    def pack(self) -> bytes:
        return _TRAILER.pack(self.plaintext_size, self.plaintext_sha256, self.prefix_sha256)

    @classmethod
    def unpack(cls, data: bytes) -> "Trailer":
        if len(data) != TRAILER_BYTES:
            raise IntegrityError("the final segment has the wrong size: the artifact is corrupt")
        return cls(*_TRAILER.unpack(data))
