"""The upload worker end to end: real RabbitMQ, a staged file on a real SMB share, encrypted into the store."""
from __future__ import annotations

import hashlib
import io
import os
import shutil

import pytest

from contracts import ArtifactReady, ArtifactReadyPayload
from tests.fixtures.rabbit import dead_letters, running, settings_for, tap, wait_for
from tests.unit.forge import configured_store, plan_set
from tests.unit.certs import make_cert, signed, signing_settings
from workers.app import App
from workers.artifacts.setmanifest import read_manifest
from workers.runtime.publisher import Publisher
from workers.storage.codec import KeyRing
from workers.storage.local import LocalStore

pytestmark = pytest.mark.integration


def stage(smb, name: str, data: bytes) -> str:
    """Put ``data`` on the share (as its owner would) and return its UNC path."""
    directory = smb.path / "staging"
    directory.mkdir(exist_ok=True)
    shutil.chown(directory, smb.username)
    path = directory / name
    path.write_bytes(data)
    shutil.chown(path, smb.username)
    return smb.unc("staging", name)



@pytest.fixture
def cert_files(tmp_path):
    return make_cert("upload-test").write(tmp_path)


def planned(tmp_path, set_id: str, component: str = "databases") -> None:
    """The catalog's plan for the set (from its backup-due), signed like the catalog's: the upload worker stores
    into planned sets only."""
    plan_set(signed(LocalStore(tmp_path / "store"), tmp_path), set_id, component)


def upload_settings(vhost, tmp_path, smb, certificate=None):
    return settings_for(vhost, store={"kind": "local", "local_path": str(tmp_path / "store")},
                        encryption={"certificate": str(certificate) if certificate else None,
                                    **(signing_settings(tmp_path) if certificate else {})},
                        staging={"smb_username": smb.username, "smb_password": smb.password,
                                 "smb_port": smb.port, "database_dir": smb.unc("staging")})


def test_staged_file_on_smb_is_stored_encrypted_verified_and_the_stage_deleted(
        rabbit_vhost, tmp_path, smb_server, cert_files):
    # Given a 3 MiB database backup staged on the SMB share and an upload worker with a certificate
    data = os.urandom(1024 * 1024) + b"appservice_hosting " * 110000
    unc = stage(smb_server, "hosting.bak", data)
    settings = upload_settings(rabbit_vhost, tmp_path, smb_server, cert_files[0])
    planned(tmp_path, "set-1")
    seen: list = []
    app = App(settings, ["upload", tap(seen, "artifact-stored")])
    with running(app):
        # When artifact-ready is published
        event = ArtifactReady(source="test", stamp="stamp1", correlation_id="set-1", payload=ArtifactReadyPayload(
            component="databases", name="appservice_hosting.bak", staged_path=unc, size=len(data),
            sha256=hashlib.sha256(data).hexdigest(), delete_staged=True))
        with Publisher(settings.broker) as pub:
            pub.publish(event)
        # Then artifact-stored follows, describing an encrypted, compressed, verified artifact
        wait_for(lambda: seen, 30, what="artifact-stored")
    stored = seen[0].payload
    assert seen[0].causation_id == event.event_id
    assert stored.key == "stamp1/set-1/databases/appservice_hosting.bak"
    assert stored.encrypted and stored.compressed and stored.verified_by == "stat"
    assert stored.plaintext_sha256 == hashlib.sha256(data).hexdigest() and stored.plaintext_size == len(data)
    assert stored.stored_size < len(data)
    # And the staged plaintext is gone from the share
    assert not (smb_server.path / "staging" / "hosting.bak").exists()
    # And the store holds only ciphertext, which opens byte-identical with the private key
    raw = (tmp_path / "store" / "stamp1/set-1/databases/appservice_hosting.bak").read_bytes()
    assert b"appservice_hosting " * 10 not in raw
    out = io.BytesIO()
    configured_store(settings).get(stored.key, out, keys=KeyRing.from_files(keys=[cert_files[1]]))
    assert out.getvalue() == data
    manifest = read_manifest(LocalStore(tmp_path / "store"), "stamp1", "set-1")
    assert [a["key"] for a in manifest["artifacts"]] == [stored.key]
    # And the worker counted the bytes it processed
    text = "\n".join(f"{s.name} {s.labels} {s.value}" for m in app.metrics.bytes.collect() for s in m.samples)
    assert f"'kind': 'uploaded-file'}} {float(len(data))}" in text


def test_redelivered_artifact_ready_is_not_uploaded_twice(rabbit_vhost, tmp_path, smb_server):
    # Given an artifact already stored by an earlier delivery of the same event
    data = b"metering" * 50000
    unc = stage(smb_server, "metering.bak", data)
    settings = upload_settings(rabbit_vhost, tmp_path, smb_server)
    planned(tmp_path, "set-2")
    seen: list = []
    app = App(settings, ["upload", tap(seen, "artifact-stored")])
    event = ArtifactReady(source="test", stamp="stamp1", correlation_id="set-2", payload=ArtifactReadyPayload(
        component="databases", name="appservice_metering.bak", staged_path=unc))
    with running(app):
        with Publisher(settings.broker) as pub:
            pub.publish(event)
            wait_for(lambda: len(seen) == 1, 30, what="first artifact-stored")
            mtime = os.stat(tmp_path / "store/stamp1/set-2/databases/appservice_metering.bak").st_mtime_ns
            # When the same event arrives again
            pub.publish(event)
            wait_for(lambda: len(seen) == 2, 30, what="second artifact-stored")
    # Then the result is re-emitted without a second upload
    assert seen[1].payload.deduplicated and not seen[0].payload.deduplicated
    assert seen[1].payload.stored_sha256 == seen[0].payload.stored_sha256
    assert os.stat(tmp_path / "store/stamp1/set-2/databases/appservice_metering.bak").st_mtime_ns == mtime


def test_secrets_without_a_certificate_are_refused_and_the_stage_is_kept(
        rabbit_vhost, tmp_path, smb_server):
    # Given no certificate configured and a staged SystemSecrets.json
    unc = stage(smb_server, "SystemSecrets.json", b'{"canary": "SECRET-CANARY-1"}')
    settings = upload_settings(rabbit_vhost, tmp_path, smb_server)
    planned(tmp_path, "set-3", "secrets")
    app = App(settings, ["upload", tap([], "artifact-stored")])
    with running(app):
        event = ArtifactReady(source="test", stamp="stamp1", correlation_id="set-3", payload=ArtifactReadyPayload(
            component="secrets", name="SystemSecrets.json", staged_path=unc, delete_staged=True))
        with Publisher(settings.broker) as pub:
            pub.publish(event)
        # Then the job is dead-lettered at once with a hint naming the setting
        letters = wait_for(lambda: dead_letters(settings, "upload"), 30, what="dead letter")
    assert letters[0].reason == "permanent"
    assert "APPSVC_DR_ENCRYPTION__CERTIFICATE" in letters[0].header("x-dr-hint")
    assert (smb_server.path / "staging" / "SystemSecrets.json").exists()
    assert not (tmp_path / "store" / "stamp1" / "set-3" / "secrets").exists()
