"""`appsvc-dr artifacts|retention|keys` as real subprocesses against a local-directory store."""
from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from contracts import new_backup_set_id
from tests.unit.certs import make_cert, signed, signing_settings
from workers.artifacts.setmanifest import artifact_key, write_manifest
from workers.artifacts.service import ArtifactStore
from workers.artifacts.sets import Plan, write_marker, write_plan
from workers.storage.codec import load_certificate, thumbprint
from workers.storage.local import LocalStore

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
STAMP = "stamp1"
PAYLOADS = {("secrets", "SystemSecrets.json"): b'{"secret": "CANARY-PLAINTEXT"}' * 50,
            ("databases", "appservice_hosting.bak"): os.urandom(300_000)}


class Env:
    """A store directory, the workers' certificate, its private key (PEM and PFX) and someone else's key."""

    def __init__(self, root: Path) -> None:
        self.root, self.store_dir = root, root / "store"
        cert, other = make_cert("appsvc-dr-cli"), make_cert("someone-else")
        self.thumbprint = thumbprint(cert.certificate)
        self.cert, self.key, self.wrong_key = root / "cert.pem", root / "key.pem", root / "other.pem"
        self.pfx = root / "key.pfx"
        self.cert.write_bytes(cert.cert_pem)
        self.key.write_bytes(cert.key_pem())
        self.wrong_key.write_bytes(other.key_pem())
        self.pfx.write_bytes(cert.pfx(b"pfx-pass"))
        self.signing = signing_settings(root)
        self.store = ArtifactStore(signed(LocalStore(self.store_dir), root), certificate=load_certificate(self.cert))

    def cli(self, *args: str, **env_extra: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("APPSVC_DR_")}
        env.update(PYTHONPATH=str(REPO), APPSVC_DR_STORE__KIND="local", APPSVC_DR_STORE__LOCAL_PATH=str(self.store_dir),
                   APPSVC_DR_ENCRYPTION__CERTIFICATE=str(self.cert), APPSVC_DR_STAMP=STAMP,
                   APPSVC_DR_ENCRYPTION__SIGNING_KEY=self.signing["signing_key"],
                   APPSVC_DR_ENCRYPTION__VERIFY_KEYS=",".join(self.signing["verify_keys"]))
        env.update(env_extra)                       # a test's own values win
        return subprocess.run([sys.executable, "-m", "workers.cli", *args], env=env, cwd=REPO, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)

    def make_set(self, days_ago: float, *, complete: bool = True, stamp: str = STAMP) -> str:
        when = datetime.now(timezone.utc) - timedelta(days=days_ago)
        set_id = new_backup_set_id(when)
        write_plan(self.store.backend, Plan(stamp, set_id, ("secrets", "databases"), "schedule", when))
        for (component, name), data in PAYLOADS.items():
            if complete or component == "secrets":
                self.store.put(artifact_key(stamp, set_id, component, name), lambda d=data: io.BytesIO(d))
        write_manifest(self.store, stamp, set_id)
        if complete:
            write_marker(self.store.backend, stamp, set_id, {"requested_at": when.isoformat()})
        return set_id


@pytest.fixture
def env(tmp_path) -> Env:
    return Env(tmp_path)


def test_list_shows_sets_with_their_state_and_one_set_with_its_artifacts(env):
    # Given a complete set and a newer incomplete one
    done, running = env.make_set(2), env.make_set(0.01, complete=False)
    # When the operator lists the stamp
    out = env.cli("artifacts", "list")
    # Then both appear with their state and components
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines()[1:]}
    assert "complete" in lines[done] and "databases,secrets" in lines[done]
    assert "incomplete" in lines[running] and " secrets " in lines[running]
    rows = json.loads(env.cli("artifacts", "list", "--json").stdout)
    assert [(r["backup_set_id"], r["complete"], r["artifacts"]) for r in rows] == [(done, True, 2), (running, False, 1)]
    # And one set lists its artifacts with sizes, a short SHA-256 and the encryption certificate
    out = env.cli("artifacts", "list", "--set", done)
    assert out.returncode == 0, out.stderr
    hosting = next(line for line in out.stdout.splitlines() if "appservice_hosting.bak" in line)
    record = env.store.record(artifact_key(STAMP, done, "databases", "appservice_hosting.bak"))
    assert "300000" in hosting and record.plaintext_sha256[:12] in hosting and f"yes ({env.thumbprint})" in hosting
    # And an unknown set is an error naming it
    missing = env.cli("artifacts", "list", "--set", "20260101T000000Z-00000000")
    assert missing.returncode == 2 and "20260101T000000Z-00000000" in missing.stderr


def test_get_round_trips_with_the_right_key_and_leaves_nothing_with_a_wrong_one(env):
    # Given a stored, encrypted database backup
    set_id = env.make_set(1)
    key = artifact_key(STAMP, set_id, "databases", "appservice_hosting.bak")
    out_dir = env.root / "restore"
    out_dir.mkdir()
    # When it is fetched with the right PEM key, and with the PFX (password from an env variable)
    got = env.cli("artifacts", "get", key, "--out", str(out_dir / "hosting.bak"), "--key", str(env.key))
    via_pfx = env.cli("artifacts", "get", key, "--out", str(out_dir / "pfx.bak"), "--pfx", str(env.pfx),
                      "--pfx-password-env", "PFX_PASS", PFX_PASS="pfx-pass")
    # Then both files are byte-identical to the original
    assert got.returncode == 0, got.stderr
    assert via_pfx.returncode == 0, via_pfx.stderr
    original = PAYLOADS[("databases", "appservice_hosting.bak")]
    assert (out_dir / "hosting.bak").read_bytes() == original and (out_dir / "pfx.bak").read_bytes() == original
    # When it is fetched with someone else's key
    wrong = env.cli("artifacts", "get", key, "--out", str(out_dir / "wrong.bak"), "--key", str(env.wrong_key))
    # Then exit 2 with a message naming the certificate it needs, and no output file, not even a partial one
    assert wrong.returncode == 2
    assert f"no private key for certificate thumbprint {env.thumbprint}" in wrong.stderr
    assert "how to fix" in wrong.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["hosting.bak", "pfx.bak"]
    # And a password for the PFX is never taken from argv: a missing env variable is a clear error
    no_var = env.cli("artifacts", "get", key, "--out", str(out_dir / "x.bak"), "--pfx", str(env.pfx),
                     "--pfx-password-env", "NOT_SET_ANYWHERE")
    assert no_var.returncode == 2 and "NOT_SET_ANYWHERE is not set" in no_var.stderr


def test_verify_names_a_tampered_artifact_and_exits_1(env):
    # Given two sets, and one stored object altered in the store
    env.make_set(2)
    victim_set = env.make_set(1)
    victim = artifact_key(STAMP, victim_set, "databases", "appservice_hosting.bak")
    path = env.store_dir / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    # When every artifact is verified, first without keys, then decrypting
    for extra in ([], ["--key", str(env.key)]):
        out = env.cli("artifacts", "verify", *extra)
        # Then the altered one is FAILED by name, the others ok, and the exit code is 1
        assert out.returncode == 1, out.stderr
        lines = out.stdout.splitlines()
        assert any(line.startswith(f"FAILED  {victim}") for line in lines)
        assert sum(line.startswith("ok ") for line in lines) == 3 and "3 ok, 1 failed" in out.stdout
    # And an intact set verifies clean
    clean = env.cli("artifacts", "verify", "--set", env.make_set(0.5), "--key", str(env.key))
    assert clean.returncode == 0 and "2 ok, 0 failed" in clean.stdout


def test_retention_dry_run_shows_the_plan_and_the_real_run_deletes_it(env):
    # Given four complete sets, a day apart
    ids = [env.make_set(days) for days in (4, 3, 2, 1)]
    # When a dry run keeps two
    dry = env.cli("retention", "apply", "--keep-last", "2", "--dry-run")
    # Then it names the two oldest and deletes nothing
    assert dry.returncode == 0, dry.stderr
    assert f"would delete {ids[0]}" in dry.stdout and f"would delete {ids[1]}" in dry.stdout
    assert "nothing was deleted" in dry.stdout
    assert sorted(p.name for p in (env.store_dir / STAMP).iterdir()) == sorted(ids)
    # When it runs for real (keep-within shorter than any set's age)
    real = env.cli("retention", "apply", "--keep-last", "2", "--keep-within", "12h")
    # Then the two oldest sets are gone from the listing
    assert real.returncode == 0, real.stderr
    assert "deleted 2 set(s)" in real.stdout
    listed = [r["backup_set_id"] for r in json.loads(env.cli("artifacts", "list", "--json").stdout)]
    assert listed == ids[2:]
    # And a bad duration is refused by the parser
    bad = env.cli("retention", "apply", "--keep-within", "a fortnight")
    assert bad.returncode == 2 and "invalid duration" in bad.stderr


def test_keys_create_makes_a_usable_pair_with_a_private_key_file(env):
    # Given paths for a new certificate and key
    cert, key = env.root / "new" / "dr.pem", env.root / "new" / "dr.key"
    cert.parent.mkdir()
    # When the operator creates them
    out = env.cli("keys", "create", "--cn", "appservice-dr-stamp1", "--cert-out", str(cert), "--key-out", str(key),
                  "--days", "30", "--key-size", "2048")
    # Then the key is owner-only and the certificate's thumbprint is printed
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert thumbprint(load_certificate(cert)) in out.stdout
    # And an artifact encrypted for the new certificate comes back with the new key
    store = ArtifactStore(env.store.backend, certificate=load_certificate(cert))
    k = artifact_key(STAMP, new_backup_set_id(), "secrets", "SystemSecrets.json")
    store.put(k, lambda: io.BytesIO(b"rotated secrets"))
    got = env.cli("artifacts", "get", k, "--out", str(env.root / "s.json"), "--key", str(key))
    assert got.returncode == 0, got.stderr
    assert (env.root / "s.json").read_bytes() == b"rotated secrets"
    # And existing files are never overwritten without --force
    again = env.cli("keys", "create", "--cn", "x", "--cert-out", str(cert), "--key-out", str(key))
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr


def test_a_password_protected_key_takes_its_password_from_an_env_variable(env):
    # Given a key pair whose key is encrypted with a password from the environment
    cert, key = env.root / "p.pem", env.root / "p.key"
    made = env.cli("keys", "create", "--cn", "pw", "--cert-out", str(cert), "--key-out", str(key),
                   "--key-size", "2048", "--key-password-env", "KEY_PASS", KEY_PASS="s3cret-CANARY")
    assert made.returncode == 0, made.stderr
    assert b"ENCRYPTED" in key.read_bytes()
    store = ArtifactStore(env.store.backend, certificate=load_certificate(cert))
    k = artifact_key(STAMP, new_backup_set_id(), "secrets", "SystemSecrets.json")
    store.put(k, lambda: io.BytesIO(b"payload"))
    # When it is used without the password (stdin is not a terminal, so nobody can be asked)
    no_pw = env.cli("artifacts", "get", k, "--out", str(env.root / "o"), "--key", str(key))
    # Then a clear error; with the env variable it works, and the password never shows up in output
    assert no_pw.returncode == 2 and "password-protected" in no_pw.stderr
    ok = env.cli("artifacts", "get", k, "--out", str(env.root / "o"), "--key", str(key),
                 "--key-password-env", "KEY_PASS", KEY_PASS="s3cret-CANARY")
    assert ok.returncode == 0, ok.stderr
    assert (env.root / "o").read_bytes() == b"payload"
    assert "CANARY" not in made.stdout + made.stderr + ok.stdout + ok.stderr
