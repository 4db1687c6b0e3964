"""The signing module on its own: key ids, settings, refusals with hints, what a signature binds."""
from __future__ import annotations

import base64
import hashlib

import pytest

from tests.unit.certs import make_cert, write_signing
from workers.config import load_settings
from workers.runtime.errors import ConfigurationError
from workers.storage.signing import SignatureError, Trust, key_id, trust_from_settings

DIGEST = hashlib.sha256(b"content").digest()


def test_settings_take_several_verify_keys_comma_separated_and_build_a_trust(tmp_path):
    # Given a signing key and two verify keys (a rotation) given as one comma-separated setting
    key, old = write_signing(tmp_path, "unit-old")
    _, new = write_signing(tmp_path, "unit-new")
    settings = load_settings(encryption={"signing_key": str(key), "verify_keys": f"{old}, {new}"})
    # Then both verify keys are accepted and the signer is the configured key
    trust = trust_from_settings(settings.encryption)
    assert settings.encryption.verify_keys == (old, new) and len(trust.verify_keys) == 2
    assert trust.signer.key_id == key_id(trust.signer.private_key.public_key()) in trust.verify_keys


def test_unusable_key_files_stop_the_process_at_start_with_a_hint(tmp_path):
    # Given an RSA key where the Ed25519 signing key belongs, and a verify key path that does not exist
    cert = make_cert("unit-rsa")
    (tmp_path / "rsa.pem").write_bytes(cert.key_pem())
    wrong = load_settings(encryption={"signing_key": str(tmp_path / "rsa.pem")})
    missing = load_settings(encryption={"verify_keys": str(tmp_path / "nope.pem")})
    # Then each is a configuration error naming the file and what to do
    with pytest.raises(ConfigurationError, match="rsa.pem is not an Ed25519 key") as caught:
        trust_from_settings(wrong.encryption)
    assert "keys create-signing" in caught.value.hint
    with pytest.raises(ConfigurationError, match="cannot read verify key .*nope.pem"):
        trust_from_settings(missing.encryption)


def test_a_signature_binds_the_store_key_and_the_digest(tmp_path):
    key, pub = write_signing(tmp_path, "unit-bind")
    writer, reader = Trust.from_files(key), Trust.from_files(verify_keys=[pub])
    signature = writer.sign("stamp1/a", DIGEST)
    # A valid signature verifies; the same signature under another key or over other content does not
    assert reader.check("stamp1/a", DIGEST, signature, what="object") is True
    with pytest.raises(SignatureError, match="does not match"):
        reader.check("stamp1/b", DIGEST, signature, what="object")
    with pytest.raises(SignatureError, match="does not match"):
        reader.check("stamp1/a", hashlib.sha256(b"other").digest(), signature, what="object")
    # And a malformed signature member is refused as such
    for bad in ("not a dict", {"alg": "rsa", "key_id": signature["key_id"], "sig": signature["sig"]},
                {"alg": "ed25519", "key_id": signature["key_id"], "sig": "***"}):
        with pytest.raises(SignatureError, match="malformed signature"):
            reader.check("stamp1/a", DIGEST, bad, what="object")
    forged = {**signature, "sig": base64.b64encode(bytes(64)).decode()}
    with pytest.raises(SignatureError, match="does not match"):
        reader.check("stamp1/a", DIGEST, forged, what="object")


def test_json_objects_are_signed_in_a_member_and_verified_without_it(tmp_path):
    key, pub = write_signing(tmp_path, "unit-json")
    signed = Trust.from_files(key).sign_json("stamp1/set/plan.json", {"b": 1, "a": [1, "x"]})
    reader = Trust.from_files(verify_keys=[pub])
    assert reader.verify_json("stamp1/set/plan.json", signed, what="plan") == {"a": [1, "x"], "b": 1}
    with pytest.raises(SignatureError, match="does not match"):
        reader.verify_json("stamp1/set/plan.json", {**signed, "b": 2}, what="plan")


def test_workers_without_a_signing_key_start_with_a_warning(tmp_path, caplog):
    # Given a site that has not configured a signing key (migration: it keeps working, unsigned)
    from tests.integration.sample_workers import flaky
    from workers.app import App
    settings = load_settings(store={"kind": "local", "local_path": str(tmp_path / "store")})
    # When its workers are built / Then the log says objects are stored unsigned and how to fix it
    App(settings, [flaky])
    assert "no signing key configured" in caplog.text and "keys create-signing" in caplog.text
    # And with a signing key there is no such warning
    caplog.clear()
    key, pub = write_signing(tmp_path, "unit-app")
    signing = load_settings(store={"kind": "local", "local_path": str(tmp_path / "store")},
                            encryption={"signing_key": str(key), "verify_keys": str(pub)})
    App(signing, [flaky])
    assert "no signing key configured" not in caplog.text
