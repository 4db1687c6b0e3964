"""A backup set's secrets reference is read from the store: it must name a secrets version of the same stamp at
the key such a version has, with its fingerprint; anything else is refused with the fix, so a forged reference
cannot hand the operator another stamp's SystemSecrets.json (or any other artifact) as this stamp's. `restore
secrets --set` checks the version it writes against the reference's fingerprint, like the drill and `recover`."""
from __future__ import annotations

import hashlib
import io
import json
from datetime import datetime, timezone

import pytest

from tests.unit.certs import make_cert, signed
from workers.artifacts.service import ArtifactStore
from workers.artifacts.setmanifest import artifact_key
from workers.cli import main
from workers.runtime.errors import PermanentError
from workers.secrets.versions import REFERENCE_NAME, set_reference, version_id, version_key
from workers.storage.codec import KeyRing
from workers.storage.local import LocalStore

SET = "20261203T010000Z-0a1b2c3d"
SECRETS = b'{"hosting": "canary-secret"}'


@pytest.fixture
def stored(tmp_path):
    cert, keys = make_cert("appsvc-dr-secrets"), KeyRing()
    keys.add_pem(cert.key_pem(), certificate=cert.cert_pem)
    keydir = tmp_path / "keys"
    keydir.mkdir()
    store = ArtifactStore(signed(LocalStore(tmp_path / "store"), keydir), certificate=cert.certificate)
    fingerprint = hashlib.sha256(SECRETS).hexdigest()
    vid = version_id(datetime(2026, 12, 2, 10, 0, tzinfo=timezone.utc), fingerprint)
    store.put(version_key("stamp1", vid), lambda: io.BytesIO(SECRETS), require_encryption=True)
    other = version_id(datetime(2026, 12, 2, 11, 0, tzinfo=timezone.utc), "b" * 64)
    store.put(version_key("stamp2", other), lambda: io.BytesIO(b'{"other": "stamp"}'), require_encryption=True)
    (tmp_path / "key.pem").write_bytes(cert.key_pem())
    return store, keys, vid, fingerprint, other, tmp_path


def put_reference(store, body: dict | bytes) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    store.put(artifact_key("stamp1", SET, "secrets", REFERENCE_NAME), lambda: io.BytesIO(data),
              require_encryption=True)


def test_a_genuine_reference_is_returned(stored):
    store, keys, vid, fingerprint, _, _ = stored
    put_reference(store, {"stamp": "stamp1", "version_id": vid, "key": version_key("stamp1", vid),
                          "fingerprint": fingerprint})
    assert set_reference(store, "stamp1", SET, keys)["key"] == version_key("stamp1", vid)


@pytest.mark.parametrize("forge", [
    lambda vid, fp, other: {"stamp": "stamp1", "version_id": other, "key": version_key("stamp2", other),
                            "fingerprint": "b" * 64},                                  # another stamp's secrets
    lambda vid, fp, other: {"stamp": "stamp1", "version_id": vid, "key": f"stamp1/{SET}/databases/x.bak",
                            "fingerprint": fp},                                        # another artifact
    lambda vid, fp, other: {"stamp": "stamp2", "version_id": vid, "key": version_key("stamp1", vid),
                            "fingerprint": fp},
    lambda vid, fp, other: {"version_id": "../x", "key": "stamp1/secrets/../x/SystemSecrets.json",
                            "fingerprint": fp},
    lambda vid, fp, other: {"version_id": vid, "key": version_key("stamp1", vid), "fingerprint": "0" * 64},
    lambda vid, fp, other: [vid],
    lambda vid, fp, other: b"not json",
])
def test_a_forged_reference_is_refused_with_the_fix(stored, forge):
    store, keys, vid, fingerprint, other, _ = stored
    put_reference(store, forge(vid, fingerprint, other))
    with pytest.raises(PermanentError, match="does not name a secrets version of stamp stamp1") as caught:
        set_reference(store, "stamp1", SET, keys)
    assert "another" in caught.value.hint


def test_restore_secrets_by_set_refuses_a_version_that_is_not_the_referenced_one(stored, monkeypatch, capsys):
    store, keys, vid, fingerprint, _, tmp_path = stored
    monkeypatch.setenv("APPSVC_DR_STORE__KIND", "local")
    monkeypatch.setenv("APPSVC_DR_STORE__LOCAL_PATH", str(tmp_path / "store"))
    monkeypatch.setenv("APPSVC_DR_ENCRYPTION__SIGNING_KEY", str(tmp_path / "keys" / "appsvc-dr-signing.pem"))
    monkeypatch.setenv("APPSVC_DR_ENCRYPTION__VERIFY_KEYS", str(tmp_path / "keys" / "appsvc-dr-signing.pub.pem"))
    args = ["restore", "secrets", "--stamp", "stamp1", "--set", SET, "--key", str(tmp_path / "key.pem")]
    put_reference(store, {"stamp": "stamp1", "version_id": vid, "key": version_key("stamp1", vid),
                          "fingerprint": fingerprint})
    assert main([*args, "--out", str(tmp_path / "good.json")]) == 0
    assert (tmp_path / "good.json").read_bytes() == SECRETS
    # When the version in the store was swapped for other content under the same id
    store.backend.delete(version_key("stamp1", vid) + ".record.json")
    store.backend.delete(version_key("stamp1", vid))
    store.put(version_key("stamp1", vid), lambda: io.BytesIO(b'{"swapped": 1}'), require_encryption=True)
    assert main([*args, "--out", str(tmp_path / "bad.json")]) != 0
    assert "names secrets fingerprint" in capsys.readouterr().err and not (tmp_path / "bad.json").exists()
