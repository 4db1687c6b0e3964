"""`recover run --resume` skips a step recorded as done only when the target chosen *now* holds its result: the
secrets file at --secrets-out with the set's fingerprint, the controller script and checklist in --out-dir as
they would be written now. The paths and digests the state file lists are not trusted for that (a state file is
read from the store, and a resume may name other targets than the run that wrote it)."""
from __future__ import annotations

import hashlib
import io
from datetime import datetime, timezone

import pytest

from tests.unit.certs import make_cert, signed
from tests.unit.forge import STAMP
from workers.artifacts.service import ArtifactStore
from workers.recover import plan as planning
from workers.recover.contents import Contents
from workers.recover.model import SCRIPT_NAME, Targets
from workers.recover.run import Runner
from workers.recover.state import DONE, Recovery, StepState, new_id, now
from workers.secrets.versions import version_id, version_key
from workers.storage.codec import KeyRing
from workers.storage.local import LocalStore

SET = "20261203T010000Z-0a1b2c3d"
SECRETS = b'{"hosting": "canary-secret"}'
OTHER = b'{"hosting": "an older stamp\'s secrets"}'


@pytest.fixture
def setup(tmp_path):
    cert, keys = make_cert("appsvc-dr-recover"), KeyRing()
    keys.add_pem(cert.key_pem(), certificate=cert.cert_pem)
    (tmp_path / "keys").mkdir()
    store = ArtifactStore(signed(LocalStore(tmp_path / "store"), tmp_path / "keys"), certificate=cert.certificate)
    fingerprint = hashlib.sha256(SECRETS).hexdigest()
    vid = version_id(datetime(2026, 12, 2, 10, 0, tzinfo=timezone.utc), fingerprint)
    store.put(version_key(STAMP, vid), lambda: io.BytesIO(SECRETS), require_encryption=True)
    contents = Contents(STAMP, SET, secrets={"version_id": vid, "key": version_key(STAMP, vid),
                                             "fingerprint": fingerprint})
    return store, keys, contents


def run(setup, targets: Targets, recovery: Recovery | None = None) -> tuple[Recovery, list[str]]:
    store, keys, contents = setup
    steps = planning.build(contents, targets, {}, "sql01")
    recovery = recovery or Recovery(new_id(), STAMP, SET, now(), targets.to_json(),
                                    [StepState(s.step_id, s.kind) for s in steps])
    said: list[str] = []
    Runner(None, store, keys, contents, targets, recovery, steps, say=said.append).run()   # type: ignore[arg-type]
    return recovery, said


def targets_at(tmp_path, out: str = "a", **extra) -> Targets:
    return Targets(secrets_out=tmp_path / out / "SystemSecrets.json", out_dir=tmp_path / out,
                   skip=("databases", "fileshare"), **extra)


def test_a_resume_to_another_secrets_file_and_out_dir_writes_them_there(setup, tmp_path):
    # Given a recovery that wrote the secrets and the script into a/
    recovery, _ = run(setup, targets_at(tmp_path, "a"))
    assert recovery.step("secrets").status == DONE and (tmp_path / "a" / "SystemSecrets.json").read_bytes() == SECRETS
    # When it is resumed with the outputs in b/ (and a new database server for the script)
    recovery, said = run(setup, targets_at(tmp_path, "b", override_database_server="sql02"), recovery)
    # Then both steps ran again, into b/: what a/ holds proves nothing about b/
    assert not [line for line in said if line.startswith("skipped")], said
    assert (tmp_path / "b" / "SystemSecrets.json").read_bytes() == SECRETS
    assert "'sql02'" in (tmp_path / "b" / SCRIPT_NAME).read_text(encoding="utf-8-sig")


def test_a_resume_with_changed_script_options_writes_the_script_again(setup, tmp_path):
    recovery, _ = run(setup, targets_at(tmp_path))
    recovery, said = run(setup, targets_at(tmp_path, override_database_server="sql02"), recovery)
    assert "skipped secrets: done in an earlier run and verified again" in said
    assert "'sql02'" in (tmp_path / "a" / SCRIPT_NAME).read_text(encoding="utf-8-sig"), said


@pytest.mark.parametrize("proof", [
    {},                                                                      # no proof at all
    {"sha256": {}},                                                          # a proof that lists nothing
    "elsewhere",                                                             # a proof naming another file
    "stale",                                                                 # the target, holding other secrets
])
def test_a_done_secrets_step_whose_target_lacks_the_sets_secrets_runs_again(setup, tmp_path, proof):
    # Given a state file that records the secrets step as done, with a proof the target does not back
    targets = targets_at(tmp_path)
    out = tmp_path / "a" / "SystemSecrets.json"
    out.parent.mkdir()
    elsewhere = tmp_path / "hostname"
    elsewhere.write_bytes(b"host\n")
    if proof == "elsewhere":
        proof = {"sha256": {str(elsewhere): hashlib.sha256(b"host\n").hexdigest()}}
    elif proof == "stale":
        out.write_bytes(OTHER)
        proof = {"sha256": {str(out): hashlib.sha256(OTHER).hexdigest()}}
    steps = planning.build(setup[2], targets, {}, "sql01")
    recovery = Recovery(new_id(), STAMP, SET, now(), targets.to_json(),
                        [StepState(s.step_id, s.kind, status=DONE if s.step_id == "secrets" else "pending",
                                   runs=1 if s.step_id == "secrets" else 0, proof=proof if s.step_id == "secrets"
                                   else {}) for s in steps])
    # When it is resumed
    recovery, said = run(setup, targets, recovery)
    # Then the step was not skipped: the set's secrets are at the target
    assert "skipped secrets: done in an earlier run and verified again" not in said
    assert recovery.step("secrets").status == DONE and out.read_bytes() == SECRETS
