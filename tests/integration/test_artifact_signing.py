"""Authenticity of stored artifacts on a real local store and a real S3 server (moto): forged with only the
public certificate, moved to another key, unencrypted secrets, key rotation, legacy reads, write-once keys."""
from __future__ import annotations

import contextlib
import io
import logging

import pytest

from tests.contract.conftest import make_store
from tests.unit.certs import make_cert, signed
from workers.artifacts.service import RECORD_SUFFIX, ArtifactStore, OverwriteError
from workers.secrets.versions import latest, secrets_key, version_key, versions
from workers.storage.codec import KeyRing, load_certificate, read_header
from workers.storage.signing import SignatureError, Trust, attach, trust_of

STAMP = "stamp1"
GENUINE = b'{"SqlServerPassword": "genuine"}'
FORGED = b'{"SqlServerPassword": "attacker"}'


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def backend(request, tmp_path):
    store = make_store(request.param, request, tmp_path)
    yield store
    with contextlib.suppress(Exception):
        for info in list(store.list("")):
            store.delete(info.key)


@pytest.fixture
def world(backend, tmp_path):
    """The workers' store (signs, verifies), the certificate everyone may have, the operator's key ring."""
    cert = make_cert("signing-test")
    cert.write(tmp_path)
    keys = KeyRing()
    keys.add_pem(tmp_path / "key.pem")
    signed(backend, tmp_path)
    return ArtifactStore(backend, certificate=load_certificate(tmp_path / "cert.pem")), keys


@contextlib.contextmanager
def attacker(backend, trust: Trust | None = None):
    """The same store written by someone holding only the public certificate (no signing key)."""
    workers = trust_of(backend)
    attach(backend, trust or Trust())
    try:
        yield
    finally:
        attach(backend, workers)


def body(source: bytes):
    return lambda: io.BytesIO(source)


def read(store: ArtifactStore, key: str, keys: KeyRing | None) -> bytes:
    out = io.BytesIO()
    store.get(key, out, keys=keys)
    return out.getvalue()


def test_a_forged_artifact_made_with_the_public_certificate_is_refused(world, backend):
    store, keys = world
    # Given a database dump forged by someone who has only the public certificate (valid encryption, no signature)
    with attacker(backend):
        store.put(f"{STAMP}/20261201T000000Z-00000000/databases/orders.bak", body(b"DROP TABLE orders;"))
    # When the operator restores it / Then it is refused, naming the object and what to do
    with pytest.raises(SignatureError, match="orders.bak.record.json.*is not signed") as caught:
        read(store, f"{STAMP}/20261201T000000Z-00000000/databases/orders.bak", keys)
    assert "--allow-unsigned" in caught.value.hint


def test_a_forged_secrets_version_never_becomes_latest_and_is_refused(world, backend, caplog):
    store, keys = world
    # Given a genuine secrets version and one dated 9999 forged with the public certificate
    genuine = version_key(STAMP, "20261201T000000000000Z-aaaaaaaaaaaa")
    store.put(genuine, body(GENUINE), require_encryption=True)
    forged = version_key(STAMP, "99991231T235959000000Z-bbbbbbbbbbbb")
    with attacker(backend):
        store.put(forged, body(FORGED), require_encryption=True)
    # When the newest version is looked up / Then the forged one is skipped with a warning
    with caplog.at_level(logging.WARNING):
        assert latest(store, STAMP).artifact.key == genuine
    assert f"skipping secrets version {forged}" in caplog.text
    assert [v.artifact.key for v in versions(store, STAMP)] == [genuine]
    assert read(store, secrets_key(store, STAMP, keys), keys) == GENUINE
    # And asking for the forged version by id is refused
    with pytest.raises(SignatureError, match="not signed"):
        read(store, forged, keys)


def test_secrets_stored_unencrypted_are_refused_even_when_signed_or_unsigned_reads_are_allowed(world, backend):
    store, keys = world
    # Given a secrets version with `cipher: none` (written by a store without certificate), signed or not
    plain = ArtifactStore(backend)
    key = version_key(STAMP, "20261202T000000000000Z-cccccccccccc")
    plain.put(key, body(FORGED))
    with backend.open(key) as stream:
        assert read_header(stream).cipher == "none"
    # When it is restored, even with --allow-unsigned / Then it is refused: secrets are always encrypted
    attach(backend, Trust(trust_of(backend).signer, trust_of(backend).verify_keys, allow_unsigned=True))
    with pytest.raises(SignatureError, match="stored unencrypted"):
        read(store, key, keys)


def test_a_genuine_object_copied_to_another_key_is_refused(world, backend):
    store, keys = world
    # Given a genuine old secrets version, copied (object and record) to a key that sorts as the newest
    old = version_key(STAMP, "20261101T000000000000Z-dddddddddddd")
    store.put(old, body(GENUINE), require_encryption=True)
    moved = version_key(STAMP, "99990101T000000000000Z-eeeeeeeeeeee")
    for suffix in ("", RECORD_SUFFIX):
        with backend.open(old + suffix) as src:
            data = src.read()
        backend.put(moved + suffix, io.BytesIO(data), size=len(data))
    # When it is read under the new key / Then it is refused as moved, and latest stays the genuine one
    with pytest.raises(SignatureError, match="moved"):
        read(store, moved, keys)
    assert latest(store, STAMP).artifact.key == old


def test_rotation_accepts_every_configured_verify_key_and_refuses_an_unknown_one(world, backend, tmp_path):
    store, keys = world
    # Given artifacts signed by the old and by the new signing key
    with attacker(backend, signed(backend, tmp_path, signer="old", verify=("old",)).trust):
        store.put(f"{STAMP}/s/databases/old.bak", body(b"old"))
    with attacker(backend, signed(backend, tmp_path, signer="new", verify=("new",)).trust):
        store.put(f"{STAMP}/s/databases/new.bak", body(b"new"))
    # When the reader has both verify keys / Then both read
    signed(backend, tmp_path, signer=None, verify=("old", "new"))
    assert read(store, f"{STAMP}/s/databases/old.bak", keys) == b"old"
    assert read(store, f"{STAMP}/s/databases/new.bak", keys) == b"new"
    # And a reader with only the new key refuses the old one, naming the unknown key and the fix
    signed(backend, tmp_path, signer=None, verify=("new",))
    with pytest.raises(SignatureError, match="signed by unknown key") as caught:
        read(store, f"{STAMP}/s/databases/old.bak", keys)
    assert "APPSVC_DR_ENCRYPTION__VERIFY_KEYS" in caught.value.hint


def test_a_legacy_unsigned_artifact_reads_only_with_the_explicit_flag_and_a_warning(world, backend, caplog):
    store, keys = world
    # Given an artifact written before signing was enabled
    with attacker(backend):
        store.put(f"{STAMP}/s/databases/legacy.bak", body(b"legacy dump"))
    # When it is read without the flag / Then it is refused
    with pytest.raises(SignatureError, match="not signed"):
        read(store, f"{STAMP}/s/databases/legacy.bak", keys)
    # And with --allow-unsigned it reads, with a WARNING naming it
    attach(backend, Trust(None, trust_of(backend).verify_keys, allow_unsigned=True))
    with caplog.at_level(logging.WARNING):
        assert read(store, f"{STAMP}/s/databases/legacy.bak", keys) == b"legacy dump"
    assert "legacy.bak.record.json) is not signed; read anyway" in caplog.text


def test_a_reader_without_a_verify_key_refuses_secrets_with_a_hint_to_configure_one(world, backend, tmp_path):
    store, keys = world
    key = version_key(STAMP, "20261201T000000000000Z-ffffffffffff")
    store.put(key, body(GENUINE), require_encryption=True)
    # When a reader with no verify key configured restores secrets
    attach(backend, Trust())
    # Then it is refused with the setting to configure
    with pytest.raises(SignatureError, match="no verify key is configured") as caught:
        read(store, key, keys)
    assert "APPSVC_DR_ENCRYPTION__VERIFY_KEYS" in caught.value.hint


def test_stored_keys_are_write_once_and_the_same_content_is_idempotent(world, backend):
    store, keys = world
    key = f"{STAMP}/20261201T000000Z-00000000/databases/orders.bak"
    store.put(key, body(b"genuine dump"))
    # When an event tries to store different content under the same key
    with pytest.raises(OverwriteError, match=f"refusing to overwrite {key}") as caught:
        store.put(key, body(b"attacker dump"))
    assert "write-once" in caught.value.hint
    # Or claims the stored SHA-256 for different content while the stored copy must be re-encrypted
    rec = store.record(key)
    rotated = ArtifactStore(backend, certificate=load_certificate(make_cert("other").cert_pem))
    with pytest.raises(OverwriteError):
        rotated.put(key, body(b"attacker dump"), known_sha256=rec.plaintext_sha256)
    # Then the stored artifact is unchanged, and storing the same content again is a no-op
    assert read(store, key, keys) == b"genuine dump"
    assert store.put(key, body(b"genuine dump")).deduplicated
