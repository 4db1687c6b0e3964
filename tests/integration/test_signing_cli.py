"""The operator's side of signing, through `appsvc-dr` in a child process: `keys create-signing`, a forged
secrets version that `restore secrets --latest` never picks, `--allow-unsigned` for a legacy artifact, and a
reader without a verify key told how to configure one."""
from __future__ import annotations

import io
import stat

import pytest

from tests.fixtures.rabbit import run_cli
from tests.unit.certs import make_cert, signing_settings
from workers.artifacts.service import ArtifactStore
from workers.config import load_settings
from workers.secrets.versions import version_key
from workers.storage.codec import load_certificate
from workers.storage.local import LocalStore
from workers.storage.signing import Trust, attach

pytestmark = pytest.mark.integration
STAMP = "stamp1"
GENUINE, FORGED = b'{"SqlServerPassword": "genuine"}', b'{"SqlServerPassword": "attacker"}'


@pytest.fixture
def site(tmp_path):
    """Settings of a reader with the verify key, a store written by signing workers, and the attacker's view."""
    make_cert("signing-cli").write(tmp_path)
    enc = {"certificate": str(tmp_path / "cert.pem"), **signing_settings(tmp_path)}
    settings = load_settings(store={"kind": "local", "local_path": str(tmp_path / "store")}, encryption=enc,
                             stamp=STAMP)
    cert = load_certificate(tmp_path / "cert.pem")
    workers = ArtifactStore(attach(LocalStore(tmp_path / "store"), Trust.from_files(enc["signing_key"])),
                            certificate=cert)
    attacker = ArtifactStore(LocalStore(tmp_path / "store"), certificate=cert)     # the public certificate only
    return settings, workers, attacker


def test_keys_create_signing_writes_a_private_signing_key_and_a_public_verify_key(tmp_path, site):
    settings = site[0]
    # When the operator makes a signing key pair
    out = run_cli(settings, "keys", "create-signing", "--key-out", str(tmp_path / "s.pem"),
                  "--pub-out", str(tmp_path / "v.pem"))
    # Then the private key is 0600, the verify key public, and the output says where each goes
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE((tmp_path / "s.pem").stat().st_mode) == 0o600
    assert b"PUBLIC KEY" in (tmp_path / "v.pem").read_bytes() and b"PRIVATE" not in (tmp_path / "v.pem").read_bytes()
    assert "APPSVC_DR_ENCRYPTION__SIGNING_KEY" in out.stdout and "APPSVC_DR_ENCRYPTION__VERIFY_KEYS" in out.stdout
    # And running it again does not overwrite the keys
    again = run_cli(settings, "keys", "create-signing", "--key-out", str(tmp_path / "s.pem"),
                    "--pub-out", str(tmp_path / "v.pem"))
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr


def test_restore_secrets_latest_skips_a_forged_version_dated_in_the_future(tmp_path, site):
    settings, workers, attacker = site
    # Given a genuine version and one forged with the public certificate, dated 9999
    genuine = version_key(STAMP, "20261201T000000000000Z-aaaaaaaaaaaa")
    workers.put(genuine, lambda: io.BytesIO(GENUINE), require_encryption=True)
    attacker.put(version_key(STAMP, "99991231T235959000000Z-bbbbbbbbbbbb"), lambda: io.BytesIO(FORGED),
                 require_encryption=True)
    # When the operator restores the latest version
    out = run_cli(settings, "restore", "secrets", "--latest", "--key", str(tmp_path / "key.pem"),
                  "--out", str(tmp_path / "SystemSecrets.json"))
    # Then the genuine one is restored and the forged one is reported as skipped
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "SystemSecrets.json").read_bytes() == GENUINE and f"restored {genuine}" in out.stdout
    assert "skipping secrets version" in out.stderr and "99991231T235959000000Z" in out.stderr


def test_a_legacy_unsigned_artifact_needs_allow_unsigned_and_is_read_with_a_warning(tmp_path, site):
    settings, _workers, attacker = site
    key = f"{STAMP}/20261101T000000Z-00000000/databases/orders.bak"
    attacker.put(key, lambda: io.BytesIO(b"legacy dump"))       # written before signing: no signature
    get = ("artifacts", "get", key, "--key", str(tmp_path / "key.pem"))
    # When fetched without the flag / Then refused (exit 2), naming the object and the flag
    refused = run_cli(settings, *get, "--out", str(tmp_path / "a.bak"))
    assert refused.returncode == 2 and "orders.bak.record.json) is not signed" in refused.stderr
    assert "--allow-unsigned" in refused.stderr and not (tmp_path / "a.bak").exists()
    # And with --allow-unsigned it is fetched, with a WARNING
    allowed = run_cli(settings, *get, "--out", str(tmp_path / "b.bak"), "--allow-unsigned")
    assert allowed.returncode == 0, allowed.stderr
    assert (tmp_path / "b.bak").read_bytes() == b"legacy dump" and "WARNING" in allowed.stderr


def test_a_reader_without_a_verify_key_is_told_to_configure_one(tmp_path, site):
    settings, workers, _attacker = site
    workers.put(version_key(STAMP, "20261201T000000000000Z-aaaaaaaaaaaa"), lambda: io.BytesIO(GENUINE),
                require_encryption=True)
    bare = settings.model_copy(update={"encryption": settings.encryption.model_copy(update={"verify_keys": ()})})
    out = run_cli(bare, "restore", "secrets", "--latest", "--key", str(tmp_path / "key.pem"),
                  "--out", str(tmp_path / "SystemSecrets.json"))
    assert out.returncode == 2 and "no verify key is configured" in out.stderr
    assert "APPSVC_DR_ENCRYPTION__VERIFY_KEYS" in out.stderr and not (tmp_path / "SystemSecrets.json").exists()
