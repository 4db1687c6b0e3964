"""Artifacts encoded from memory in one go (file-share packs): the same format the streaming decoder reads,
uploaded with their stored SHA-256 known up front."""
from __future__ import annotations

import hashlib
import io
import os

import pytest

from tests.unit.certs import make_cert
from tests.unit.test_artifact_format import MODES, decode_all, records
from workers.artifacts.service import RECORD_SUFFIX, ArtifactStore
from workers.storage.codec import KeyRing, encode_buffer, load_certificate, read_header
from workers.storage.crypto import KIND_DATA
from workers.storage.local import LocalStore

MiB = 1 << 20
TEXT = b"2026-11-21 03:00:00 INFO request served in 12 ms path=/api/items/%d\n"


@pytest.fixture(scope="module")
def keys():
    cert, ring = make_cert("appsvc-dr-buffer"), KeyRing()
    ring.add_pem(cert.key_pem(), certificate=cert.cert_pem)
    return cert, ring


def mixed(size: int) -> bytes:
    """Alternating 64 KiB blocks of random bytes and log text: compresses by about half."""
    blocks = [os.urandom(64 * 1024) if i % 2 else b"".join(TEXT % n for n in range(1200))[:64 * 1024]
              for i in range(-(-size // (64 * 1024)))]
    return b"".join(blocks)[:size]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [0, 1, MiB, 3 * MiB + 5])
def test_a_buffer_encoded_in_memory_reads_back_with_the_streaming_decoder(mode, size, keys):
    cert, ring = keys
    # Given a body in memory (a pack being filled is a bytearray)
    body = bytearray(mixed(size))
    compress, encrypted = MODES[mode]
    # When it is encoded in one go
    enc = encode_buffer(memoryview(body), compress=compress, recipient=cert.certificate if encrypted else None,
                        segment_size=256 * 1024)
    # Then the streaming decoder verifies and returns it, and the hashes describe what was encoded and stored
    plain_sha = hashlib.sha256(body).hexdigest()
    got_sha, got_size, dec = decode_all(enc.data, ring, expected_sha256=plain_sha, expected_size=size)
    assert (got_sha, got_size) == (enc.plaintext_sha256, enc.plaintext_size) == (plain_sha, size)
    assert (enc.stored_sha256, enc.stored_size) == (hashlib.sha256(enc.data).hexdigest(), len(enc.data))
    assert dec.stored_sha256 == enc.stored_sha256
    assert (enc.compressed, enc.encrypted) == (compress, encrypted) == (dec.compressed, dec.encrypted)
    # And data segments are full-sized except the last, as the streaming encoder writes them
    tag = 16 if encrypted else 0
    data = [length - 5 - tag for _, kind, length in records(enc.data) if kind == KIND_DATA]
    assert all(n == 256 * 1024 for n in data[:-1]) and all(0 < n <= 256 * 1024 for n in data[-1:])


def test_a_buffer_that_does_not_compress_is_stored_as_it_is(keys):
    cert, ring = keys
    # Given a pack of content that is compressed already, and one of text
    noise, text = os.urandom(4 * MiB), b"".join(TEXT % n for n in range(70000))[:4 * MiB]
    # When both are encoded with compression asked for
    stored_noise = encode_buffer(noise, compress=True, recipient=cert.certificate)
    stored_text = encode_buffer(text, compress=True, recipient=cert.certificate)
    # Then zstd is skipped only where it would not save anything, the header says so, and both read back
    assert not stored_noise.compressed and not read_header(io.BytesIO(stored_noise.data)).compressed
    assert stored_text.compressed and len(stored_text.data) < len(text) // 10
    assert decode_all(stored_noise.data, ring)[0] == hashlib.sha256(noise).hexdigest()
    assert decode_all(stored_text.data, ring)[0] == hashlib.sha256(text).hexdigest()


class _Counting(LocalStore):
    def __init__(self, root) -> None:
        super().__init__(root)
        self.opened: list[str] = []
        self.hashes: list[str | None] = []

    def open(self, key: str):  # type: ignore[no-untyped-def]
        self.opened.append(key)
        return super().open(key)

    def put(self, key, stream, size=None, metadata=None, *, sha256=None):  # type: ignore[no-untyped-def]
        self.hashes.append(sha256)
        return super().put(key, stream, size, metadata, sha256=sha256)


def test_put_buffer_stores_records_and_deduplicates_like_put(tmp_path, keys):
    cert, ring = keys
    backend = _Counting(tmp_path)
    store = ArtifactStore(backend, certificate=load_certificate(cert.cert_pem))
    body = bytearray(mixed(2 * MiB + 3))
    # Given a body put under a key never used before (a random pack id)
    first = store.put_buffer("s/fileshare/packs/p1", memoryview(body), new_key=True)
    # Then no record was looked for, the backend got the stored bytes' SHA-256 (and the record's), and the
    # record describes them
    record = (tmp_path / ("s/fileshare/packs/p1" + RECORD_SUFFIX)).read_bytes()
    assert backend.opened == [] and backend.hashes == [first.stored_sha256, hashlib.sha256(record).hexdigest()]
    assert store.record("s/fileshare/packs/p1") == first and first.plaintext_size == len(body)
    out = io.BytesIO()
    store.get("s/fileshare/packs/p1", out, keys=ring)
    assert out.getvalue() == body
    # When the same body is put again under that key without new_key
    again = store.put_buffer("s/fileshare/packs/p1", bytes(body))
    # Then it is found stored already and not uploaded again
    assert again.deduplicated and again.stored_sha256 == first.stored_sha256
    assert backend.opened[-1] == "s/fileshare/packs/p1" + RECORD_SUFFIX


@pytest.mark.parametrize("mode", MODES)
def test_a_pack_without_a_plaintext_hash_is_version_2_and_still_fully_checked(mode, keys, monkeypatch):
    from tests.unit.test_artifact_format import DAMAGE
    from workers.storage import crypto
    from workers.storage.codec import IntegrityError, UnsupportedArtifactError, decode
    cert, ring = keys
    compress, encrypted = MODES[mode]
    body = mixed(3 * MiB + 5)
    # Given a pack encoded without hashing its plaintext as a whole (its blobs carry their own SHA-256)
    enc = encode_buffer(body, compress=compress, recipient=cert.certificate if encrypted else None,
                        segment_size=256 * 1024, hash_plaintext=False)
    # Then it says so in a version 2 header, records no plaintext hash, and keeps the stored-bytes hash
    header = read_header(io.BytesIO(enc.data))
    assert (header.version, header.plaintext_hash, enc.plaintext_sha256) == (2, "none", None)
    assert enc.stored_sha256 == hashlib.sha256(enc.data).hexdigest() and enc.plaintext_size == len(body)
    # And it decodes to the body, without a whole-body hash unless the caller expects one (then it is checked)
    sha, size, dec = decode_all(enc.data, ring)
    assert (sha, size, dec.plaintext_sha256) == (hashlib.sha256(body).hexdigest(), len(body), None)
    assert decode_all(enc.data, ring, expected_sha256=sha)[2].plaintext_sha256 == sha
    with pytest.raises(IntegrityError):
        decode_all(enc.data, ring, expected_sha256=hashlib.sha256(b"other").hexdigest())
    with pytest.raises(IntegrityError):
        decode_all(enc.data, ring, expected_size=len(body) + 1)
    # And every kind of damage is still detected: flipped bits, cuts, swapped/dropped/repeated segments
    for name, damage in DAMAGE.items():
        with pytest.raises(IntegrityError):
            decode_all(damage(enc.data), ring)
    # And everything else is still written as version 1, which older readers know
    assert read_header(io.BytesIO(encode_buffer(body[:10], compress=compress, recipient=None).data)).version == 1
    # And a reader that only knows version 1 refuses the pack clearly instead of calling it corrupt
    monkeypatch.setattr(crypto, "VERSIONS", (1,))
    with pytest.raises(UnsupportedArtifactError, match="version 2"):
        decode(io.BytesIO(enc.data), keys=ring)


def test_the_store_records_a_pack_without_a_plaintext_hash_and_reads_it_back(keys, tmp_path):
    cert, ring = keys
    store = ArtifactStore(LocalStore(tmp_path), certificate=cert.certificate)
    body = mixed(MiB + 3)
    # Given a pack stored without a whole-body hash
    stored = store.put_buffer("repo/packs/ab/abc", body, new_key=True, hash_plaintext=False)
    # Then its record says so, and reading it back verifies sizes and stored bytes and returns the body
    assert store.record("repo/packs/ab/abc").plaintext_sha256 is None and stored.plaintext_sha256 is None
    out = io.BytesIO()
    store.get("repo/packs/ab/abc", out, keys=ring)
    assert out.getvalue() == body
    # And the option is refused where reuse would need the hash
    with pytest.raises(ValueError, match="new_key"):
        store.put_buffer("repo/x", body, hash_plaintext=False)
