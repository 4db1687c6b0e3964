"""The artifact format: streamed zstd + AES-256-GCM segments with a certificate-wrapped data key."""
from __future__ import annotations

import hashlib
import io
import os
import random
import struct
import tracemalloc

import pytest
from cryptography.hazmat.primitives import hashes

from workers.storage.codec import (IntegrityError, KeyLoadError, KeyNotFoundError, KeyRing, NotAnArtifactError,
                                      WrongPasswordError, decode, encode, generate_self_signed, load_certificate,
                                      read_header, thumbprint)

try:  # tests/unit is a plain directory today; keep working if it becomes a package
    from tests.unit.certs import make_cert, make_ec_cert_pem
except ImportError:  # pragma: no cover
    from certs import make_cert, make_ec_cert_pem  # type: ignore[no-redef]

MiB = 1 << 20
MODES = {"raw": (False, False), "compressed": (True, False), "encrypted": (False, True),
         "compressed+encrypted": (True, True)}
CANARY = b"CANARY-4f1d-connection-string-Password=hunter2"


@pytest.fixture(scope="module")
def cert():
    return make_cert("appsvc-dr-current")


@pytest.fixture(scope="module")
def ring(cert):
    keys = KeyRing()
    keys.add_pem(cert.key_pem(), certificate=cert.cert_pem)
    return keys


def write_sample(path, size: int) -> str:
    """Streams ``size`` bytes to ``path``: alternating 64 KiB blocks of random bytes and repetitive text."""
    rng, written, block = random.Random(size), 0, 0
    with open(path, "wb") as out:
        while written < size:
            n = min(64 * 1024, size - written)
            chunk = rng.randbytes(n) if block % 2 else (b"site=app%d;db=sql;" % block * 5000)[:n]
            out.write(chunk)
            written, block = written + n, block + 1
    return str(path)


def file_sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def encode_blob(source, mode: str, cert, **kwargs):
    compress, encrypted = MODES[mode]
    stream = encode(source, compress=compress, recipient=cert.certificate if encrypted else None, **kwargs)
    parts = []
    while chunk := stream.read(100_000):  # odd read size: crosses record boundaries
        parts.append(chunk)
    return b"".join(parts), stream


def decode_all(blob: bytes, keys=None, read_size: int = 64 * 1024, **kwargs):
    stream = decode(io.BytesIO(blob), keys=keys, **kwargs)
    sha, size = hashlib.sha256(), 0
    while chunk := stream.read(read_size):
        sha.update(chunk)
        size += len(chunk)
    return sha.hexdigest(), size, stream


def records(blob: bytes):
    """(offset, kind, total length) of every record after the header, per the documented layout."""
    pos, out = len(read_header(io.BytesIO(blob)).raw), []
    while pos < len(blob):
        kind, length = struct.unpack(">BI", blob[pos:pos + 5])
        out.append((pos, kind, 5 + length))
        pos += 5 + length
    return out


def flip(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 0x01]) + blob[index + 1:]


@pytest.fixture(scope="module")
def big_sample(tmp_path_factory):
    return write_sample(tmp_path_factory.mktemp("artifact") / "sample.bin", 4 * MiB + 123)


@pytest.fixture(scope="module")
def big_blobs(big_sample, cert):
    """The multi-segment sample encoded once per mode."""
    blobs = {}
    for mode in MODES:
        with open(big_sample, "rb") as source:
            blobs[mode] = encode_blob(source, mode, cert)[0]
    return blobs


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [0, 5, "big"])
def test_round_trip_reports_hashes_and_sizes(mode, size, cert, ring, big_sample, tmp_path):
    # Given an empty, a tiny or a multi-segment plaintext file
    path = big_sample if size == "big" else write_sample(tmp_path / "in.bin", size)
    plain_size, plain_sha = os.path.getsize(path), file_sha256(path)
    # When it is encoded from the file stream and decoded again
    with open(path, "rb") as source:
        blob, enc = encode_blob(source, mode, cert)
    got_sha, got_size, dec = decode_all(blob, ring, expected_sha256=plain_sha, expected_size=plain_size)
    # Then the plaintext comes back unchanged and both sides report the same hashes and sizes
    assert (got_sha, got_size) == (enc.plaintext_sha256, enc.plaintext_size) == (plain_sha, plain_size)
    assert (dec.plaintext_sha256, dec.plaintext_size) == (plain_sha, plain_size)
    assert (enc.stored_sha256, enc.stored_size) == (hashlib.sha256(blob).hexdigest(), len(blob))
    assert (dec.stored_sha256, dec.stored_size) == (enc.stored_sha256, enc.stored_size)
    compressed, encrypted = MODES[mode]
    assert enc.encrypted == dec.encrypted == encrypted and enc.compressed == compressed
    assert enc.thumbprint == dec.thumbprint == (thumbprint(cert.certificate) if encrypted else None)
    kinds = [kind for _, kind, _ in records(blob)]
    assert kinds[-1] == 1 and kinds.count(1) == 1
    if size == "big":
        assert len(kinds) >= 3  # at least two data segments and the final one


def test_compressible_data_gets_smaller(cert, tmp_path):
    # Given 4 MiB of repetitive text
    path = tmp_path / "log.txt"
    path.write_bytes(b"".join(b"%063d\n" % (i % 1000) for i in range(4 * MiB // 64)))
    # When it is encoded with and without compression
    sizes = {}
    for mode in MODES:
        with open(path, "rb") as source:
            sizes[mode] = len(encode_blob(source, mode, cert)[0])
    # Then compression shrinks it a lot, before and after encryption
    assert sizes["compressed"] < sizes["raw"] / 10
    assert sizes["compressed+encrypted"] < sizes["encrypted"] / 10


def _segments(blob, edit):
    recs = records(blob)
    segs = [blob[o:o + n] for o, _, n in recs]
    edit(segs)
    return blob[:recs[0][0]] + b"".join(segs)


def _in_record(blob, which):  # flip a byte in the middle of a record's payload
    offset, _, length = records(blob)[which]
    return flip(blob, offset + 5 + length // 2)


DAMAGE = {  # name -> how a multi-segment artifact is damaged
    "header-version": lambda b: flip(b, 8),
    "header-body": lambda b: flip(b, 20),
    "header-checksum": lambda b: flip(b, records(b)[0][0] - 1),
    "flip-first-segment": lambda b: _in_record(b, 0),
    "flip-last-data-segment": lambda b: _in_record(b, -2),
    "flip-final-segment": lambda b: _in_record(b, -1),
    "cut-to-empty": lambda b: b"",
    "cut-in-header": lambda b: b[:30],
    "cut-mid-segment": lambda b: b[:records(b)[1][0] + records(b)[1][2] // 2],
    "drop-final-segment": lambda b: b[:records(b)[-1][0]],
    "cut-in-final-head": lambda b: b[:records(b)[-1][0] + 3],
    "swap-segments": lambda b: _segments(b, lambda s: s.__setitem__(slice(0, 2), [s[1], s[0]])),
    "drop-middle-segment": lambda b: _segments(b, lambda s: s.__delitem__(1)),
    "repeat-segment": lambda b: _segments(b, lambda s: s.insert(1, s[0])),
    "append-byte": lambda b: b + b"\0",
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_artifacts_are_detected(mode, damage, ring, big_blobs):
    # Given a multi-segment artifact (its first two data segments are full, so of equal length)
    blob = big_blobs[mode]
    # When one bit flips, it is cut short, or segments are swapped, dropped, repeated or appended to
    damaged = DAMAGE[damage](blob)
    assert damaged != blob and len(records(blob)) >= 4
    # Then decoding raises IntegrityError with the operator's hint, and keeps raising it on further reads
    stream = None
    with pytest.raises(IntegrityError) as info:
        stream = decode(io.BytesIO(damaged), keys=ring)
        while stream.read(MiB):
            pass
    assert "re-fetch" in info.value.hint and "another backup set" in info.value.hint
    if stream is not None:
        with pytest.raises(IntegrityError):
            stream.read(1)


def test_header_of_another_artifact_is_detected(cert, ring):
    # Given two artifacts encrypted for the same certificate
    first, _ = encode_blob(io.BytesIO(b"first" * 50), "encrypted", cert)
    second, _ = encode_blob(io.BytesIO(b"other" * 50), "encrypted", cert)
    # When the header of one is spliced onto the segments of the other, Then nothing decodes
    spliced = first[:records(first)[0][0]] + second[records(second)[0][0]:]
    with pytest.raises(IntegrityError):
        decode_all(spliced, ring)


@pytest.mark.parametrize("mode", MODES)
def test_wrong_expectations_are_detected(mode, cert, ring):
    # Given a valid artifact of a known plaintext
    blob, enc = encode_blob(io.BytesIO(b"hello"), mode, cert)
    # When the catalogue expects another hash or size, Then IntegrityError
    with pytest.raises(IntegrityError):
        decode_all(blob, ring, expected_sha256=hashlib.sha256(b"hellO").hexdigest())
    with pytest.raises(IntegrityError):
        decode_all(blob, ring, expected_size=6)
    assert decode_all(blob, ring, expected_sha256=enc.plaintext_sha256.upper(), expected_size=5)[1] == 5


def test_foreign_data_is_not_an_artifact(ring):
    # Given a zip file, When it is decoded, Then NotAnArtifactError says so at once
    with pytest.raises(NotAnArtifactError) as info:
        decode(io.BytesIO(b"PK\x03\x04" + b"\0" * 100), keys=ring)
    assert "storage key" in info.value.hint


def test_short_reads_from_the_source_are_fine(cert, ring, big_sample):
    # Given an artifact (64 KiB segments) served by a stream that returns at most 7 bytes per read
    with open(big_sample, "rb") as source:
        blob, enc = encode_blob(source, "compressed+encrypted", cert, segment_size=64 * 1024)
    trickle = io.BytesIO(blob)
    trickle.read = lambda size=-1, read=trickle.read: read(min(size, 7) if size and size > 0 else 7)
    # When it is decoded, Then the plaintext comes back intact
    assert hashlib.sha256(decode(trickle, keys=ring).read()).hexdigest() == enc.plaintext_sha256


def test_missing_key_names_the_thumbprint(cert):
    # Given an artifact encrypted for one certificate and a key ring holding an unrelated key
    blob, _ = encode_blob(io.BytesIO(b"secret"), "encrypted", cert)
    other = make_cert("appsvc-dr-unrelated")
    keys = KeyRing()
    keys.add_pfx(other.pfx(b"pw"), password="pw")
    wanted = thumbprint(cert.certificate)
    # When it is decoded with the wrong key ring, or with none, Then KeyNotFoundError names the thumbprint
    for candidate in (keys, None):
        with pytest.raises(KeyNotFoundError) as info:
            decode(io.BytesIO(blob), keys=candidate)
        assert wanted in info.value.message and wanted in info.value.hint
        assert "--key" in info.value.hint and "--pfx" in info.value.hint


def test_key_ring_opens_artifacts_from_before_and_after_rotation(tmp_path):
    # Given an old certificate (key as password-protected PEM) and a new one (key as PFX)
    old, new = make_cert("appsvc-dr-2025"), make_cert("appsvc-dr-2026")
    (tmp_path / "old.key").write_bytes(old.key_pem(b"old-pass") + old.cert_pem)
    (tmp_path / "new.pfx").write_bytes(new.pfx(b"new-pass"))
    ring = KeyRing.from_files(keys=[tmp_path / "old.key"], key_password="old-pass",
                              pfx=[tmp_path / "new.pfx"], pfx_password="new-pass")
    assert set(ring.names) == {thumbprint(old.certificate), thumbprint(new.certificate)}
    # When artifacts are made for each certificate, Then the one key ring opens both
    for cert, text in ((old, b"made before rotation"), (new, b"made after rotation")):
        blob, _ = encode_blob(io.BytesIO(text), "compressed+encrypted", cert)
        assert decode(io.BytesIO(blob), keys=ring).read() == text
    # And a bare private key PEM (no certificate beside it) is found through its public-key hash
    bare = KeyRing()
    bare.add_pem(old.key_pem())
    assert decode(io.BytesIO(encode_blob(io.BytesIO(b"x"), "encrypted", old)[0]), keys=bare).read() == b"x"


def test_key_files_with_wrong_or_missing_passwords_fail_clearly(cert, tmp_path):
    # Given a PFX and a PEM key protected by passwords, and files that are not keys
    (tmp_path / "k.pfx").write_bytes(cert.pfx(b"Correct-Horse-1"))
    (tmp_path / "k.pem").write_bytes(cert.key_pem(b"Correct-Horse-1"))
    (tmp_path / "junk").write_bytes(b"not a key at all")
    # When they are loaded with the right password, Then they work
    KeyRing().add_pfx(tmp_path / "k.pfx", password="Correct-Horse-1")
    KeyRing().add_pem(tmp_path / "k.pem", password=b"Correct-Horse-1")
    # When the password is wrong or missing, Then WrongPasswordError names the file but not the password
    for load in (lambda pw: KeyRing().add_pfx(tmp_path / "k.pfx", password=pw),
                 lambda pw: KeyRing().add_pem(tmp_path / "k.pem", password=pw)):
        for password in ("Wrong-Battery-9", None):
            with pytest.raises(WrongPasswordError) as info:
                load(password)
            text = f"{info.value.message} {info.value.hint}"
            assert "k." in text and "Wrong-Battery-9" not in text and "Correct-Horse-1" not in text
    # When a file is not a key, or the key does not match the certificate, Then KeyLoadError
    for load in (lambda: KeyRing().add_pem(tmp_path / "junk"), lambda: KeyRing().add_pem(tmp_path / "nope.pem"),
                 lambda: KeyRing().add_pfx(tmp_path / "junk", password="x"),
                 lambda: KeyRing().add_pem(cert.key_pem(), certificate=make_cert("appsvc-dr-unrelated").cert_pem)):
        with pytest.raises(KeyLoadError):
            load()


@pytest.mark.parametrize("compress", [False, True])
def test_encrypted_output_hides_the_plaintext(compress, cert):
    # Given plaintext that contains a known canary string many times
    data = (b"some text " + CANARY + b"\n") * 5000
    # When it is encrypted (with or without compression), Then the canary appears nowhere in the artifact
    blob, _ = encode_blob(io.BytesIO(data), "compressed+encrypted" if compress else "encrypted", cert)
    assert CANARY not in blob and CANARY[:16] not in blob
    assert CANARY in encode_blob(io.BytesIO(data), "raw", cert)[0]  # the check itself can see it


def test_thumbprint_certificate_loading_and_self_signed_generation(cert, tmp_path):
    # Given a freshly generated self-signed pair (password-protected key)
    cert_pem, key_pem = generate_self_signed("appsvc-dr-ops", 30, key_size=2048, password="pw")
    made = load_certificate(cert_pem)
    # Then its thumbprint looks like Windows shows it and the pair round-trips an artifact
    assert thumbprint(made) == made.fingerprint(hashes.SHA1()).hex().upper() and len(thumbprint(made)) == 40
    keys = KeyRing()
    keys.add_pem(key_pem, password="pw", certificate=cert_pem)
    blob = encode(io.BytesIO(b"ops"), compress=True, recipient=made).read()
    assert decode(io.BytesIO(blob), keys=keys).read() == b"ops"
    # And certificates load from PEM or DER (.cer); EC certificates, junk and missing files are refused
    (tmp_path / "c.cer").write_bytes(cert.cert_der)
    assert thumbprint(load_certificate(tmp_path / "c.cer")) == thumbprint(load_certificate(cert.cert_pem))
    for bad in (make_ec_cert_pem(), b"garbage", str(tmp_path / "missing.cer")):
        with pytest.raises(KeyLoadError):
            load_certificate(bad)


class Generated:
    """A source produced on demand (random or zeros): never held in memory."""

    def __init__(self, size: int, kind: str) -> None:
        self.left, self.make = size, os.urandom if kind == "random" else bytes

    def read(self, size: int = -1) -> bytes:
        n = min(self.left, size if size and size > 0 else MiB)
        self.left -= n
        return self.make(n)


@pytest.mark.parametrize("kind", ["random", "zeros"])
def test_memory_stays_bounded_for_a_large_stream(kind, cert, ring):
    # Given a 64 MiB stream piped through encode and straight into decode
    size = 64 * MiB
    tracemalloc.start()
    try:
        encoded = encode(Generated(size, kind), compress=True, recipient=cert.certificate)
        decoded = decode(encoded, keys=ring)
        # When it is read with small reads
        total = 0
        while chunk := decoded.read(16 * 1024):
            total += len(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Then everything arrives, verified, and no more than a few segments were ever held at once
    assert total == size == decoded.plaintext_size == encoded.plaintext_size
    assert decoded.plaintext_sha256 == encoded.plaintext_sha256
    assert peak < 32 * MiB, f"peak traced memory {peak / MiB:.1f} MiB"
