"""ArtifactStore re-runs on a local store: what counts as 'already stored'."""
from __future__ import annotations

import contextlib
import io
import os

import pytest

from tests.unit.certs import make_cert
from workers.artifacts.service import ArtifactStore
from workers.storage.codec import IntegrityError
from workers.storage.local import LocalStore

DATA = b"appservice_hosting backup " * 20000


def opener():
    return contextlib.nullcontext(io.BytesIO(DATA))


def test_an_object_rewritten_since_verification_is_stored_again(tmp_path):
    # Given a stored artifact
    store = ArtifactStore(LocalStore(tmp_path), compress=True)
    first = store.put("s/set/databases/a.bak", opener)
    # When its object is rewritten in place with the same size (bit rot, tampering, a stray copy)
    path = tmp_path / "s/set/databases/a.bak"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(raw)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 5_000_000_000))
    # Then a re-run does not trust it but stores the artifact again, and it reads back intact
    again = store.put("s/set/databases/a.bak", opener)
    assert not again.deduplicated and again.plaintext_sha256 == first.plaintext_sha256
    out = io.BytesIO()
    store.get("s/set/databases/a.bak", out)
    assert out.getvalue() == DATA


def test_an_unchanged_object_is_not_uploaded_twice(tmp_path):
    store = ArtifactStore(LocalStore(tmp_path))
    store.put("s/set/databases/a.bak", opener)
    mtime = (tmp_path / "s/set/databases/a.bak").stat().st_mtime_ns
    assert store.put("s/set/databases/a.bak", opener).deduplicated
    assert (tmp_path / "s/set/databases/a.bak").stat().st_mtime_ns == mtime


def test_after_a_certificate_rotation_a_re_run_encrypts_for_the_new_certificate(tmp_path):
    old, new = make_cert("old"), make_cert("new")
    from workers.storage.codec import load_certificate
    ArtifactStore(LocalStore(tmp_path), certificate=load_certificate(old.cert_pem)).put("s/x/secrets/f", opener)
    rotated = ArtifactStore(LocalStore(tmp_path), certificate=load_certificate(new.cert_pem))
    stored = rotated.put("s/x/secrets/f", opener)
    assert not stored.deduplicated and stored.thumbprint == rotated.record("s/x/secrets/f").thumbprint
    assert rotated.put("s/x/secrets/f", opener).deduplicated


def test_stored_tells_a_finished_artifact_from_a_missing_damaged_or_rewritten_one(tmp_path):
    store = ArtifactStore(LocalStore(tmp_path))
    key = "s/set/databases/a.bak"
    # Given nothing stored yet / Then it is not stored
    assert store.stored(key) is None
    # When the artifact is stored and verified / Then it is, as the record says (and marked as already there)
    first = store.put(key, opener)
    found = store.stored(key)
    assert found is not None and found.deduplicated and found.stored_sha256 == first.stored_sha256
    # When its object is rewritten since (another size) / Then it no longer counts as stored
    (tmp_path / key).write_bytes(b"short")
    assert store.stored(key) is None
    # And a damaged record does not count either
    store.put(key, opener)
    (tmp_path / (key + ".record.json")).write_text("{not json")
    assert store.stored(key) is None


class Counting(io.RawIOBase):
    """A sink that keeps only how many bytes it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.n += len(data)
        return len(data)


def test_a_body_larger_than_its_record_says_is_refused_as_soon_as_it_exceeds_it(tmp_path):
    # Given a small artifact whose object was replaced by another artifact's much larger (zstd: highly compressible)
    # body: a few KiB stored that decode to 64 MiB
    store = ArtifactStore(LocalStore(tmp_path), compress=True)
    store.put("s/set/meta/small.json", lambda: contextlib.nullcontext(io.BytesIO(b'{"ok": true}')))
    store.put("s/set/meta/bomb.bin", lambda: contextlib.nullcontext(io.BytesIO(bytes(64 << 20))))
    (tmp_path / "s/set/meta/small.json").write_bytes((tmp_path / "s/set/meta/bomb.bin").read_bytes())
    # When it is read as the small one
    sink = Counting()
    with pytest.raises(IntegrityError, match="exceeds the 12 bytes"):
        store.get("s/set/meta/small.json", sink)
    # Then the read stopped at the first piece past the record's size instead of decoding all 64 MiB
    assert sink.n <= 1 << 20
