"""Secrets rotation end to end over real RabbitMQ and a real SMB drop share; a canary secret never leaks."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
import os
import shutil
import stat
import subprocess

import pika
import pytest
from pydantic import SecretStr

from tests.fixtures.rabbit import REPO, dead_letters, run_cli, running, settings_for, tap, wait_for
from tests.fixtures.webhook_server import webhook_server  # noqa: F401 - session fixture
from tests.unit.certs import make_cert, signing_settings
from workers.app import App
from workers.runtime.amqp import connection_parameters
from workers.runtime.errors import ConfigurationError
from workers.runtime.publisher import Publisher
from workers.secrets.drop import copy_to_drop
from contracts import SecretsRotated, SecretsRotatedPayload

pytestmark = pytest.mark.integration
CANARY = "CANARY-7f3e-do-not-leak"
SECRETS = {"FileServerUserPassword": CANARY, "SqlServerPassword": "p@ss-" + CANARY,
           "CertificatePassword": "x" * 40, "Version": 2}


@pytest.fixture
def env(rabbit_vhost, tmp_path, smb_server):
    make_cert("secrets-test").write(tmp_path)
    drop = smb_server.path / f"drop-{rabbit_vhost}"
    drop.mkdir()
    shutil.chown(drop, smb_server.username)
    settings = settings_for(
        rabbit_vhost, store={"kind": "local", "local_path": str(tmp_path / "store")},
        encryption={"certificate": str(tmp_path / "cert.pem"), **signing_settings(tmp_path)},
        staging={"smb_username": smb_server.username, "smb_password": smb_server.password,
                 "smb_port": smb_server.port},
        secrets={"drop_path": smb_server.unc(drop.name)})
    (tmp_path / "SystemSecrets.json").write_text(json.dumps(SECRETS))
    return settings, tmp_path, drop


def cli(settings, *args: str) -> subprocess.CompletedProcess:
    return run_cli(settings, *args)


class Spy:
    """A queue bound to every routing key of the exchange: sees each event published in the vhost."""

    def __init__(self, settings) -> None:
        self.settings = settings
        with pika.BlockingConnection(connection_parameters(settings.broker)) as conn:
            ch = conn.channel()
            ch.exchange_declare(settings.broker.exchange, exchange_type="topic", durable=True)
            ch.queue_declare("spy", durable=True)
            ch.queue_bind("spy", settings.broker.exchange, routing_key="#")

    def drain(self, queue: str = "spy") -> list[bytes]:
        bodies = []
        with pika.BlockingConnection(connection_parameters(self.settings.broker)) as conn:
            ch = conn.channel()
            while True:
                method, props, body = ch.basic_get(queue, auto_ack=True)
                if method is None:
                    return bodies
                bodies.append(body + json.dumps(props.headers or {}, default=str).encode())



def assert_no_canary_in_store(root) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            assert CANARY.encode() not in open(os.path.join(dirpath, name), "rb").read(), name


def test_rotation_is_stored_encrypted_drop_deleted_backup_triggered_and_restores_identically(env, caplog):
    settings, tmp, drop = env
    caplog.set_level(logging.DEBUG)
    spy = Spy(settings)
    seen: list = []
    app = App(settings, ["secrets", "catalog", tap(seen, "secrets-stored", "artifact-stored")])  # catalog: plans
    with running(app):
        # When the rotation hook publishes the exported file
        published = cli(settings, "publish", "secrets-rotated", "--file", str(tmp / "SystemSecrets.json"),
                        "--stamp", "stamp1")
        assert published.returncode == 0, published.stderr
        # Then a version is stored, and the backup it triggers links that version into a new set
        wait_for(lambda: any(e.type == "artifact-stored" for e in seen), 30, what="backup set linked")
        metrics = app.metrics
    stored = next(e for e in seen if e.type == "secrets-stored").payload
    assert not stored.duplicate and stored.drop_deleted
    assert list(drop.iterdir()) == []                       # plaintext no longer on the share
    events = [json.loads(b[:b.index(b"}{") + 1] if b"}{" in b else b) for b in spy.drain()]
    backup = next(e for e in events if e["type"] == "backup-due")
    assert backup["payload"]["reason"] == "secrets-rotated" and backup["payload"]["components"] == \
        ["secrets", "databases", "fileshare"]
    # And the operator restores a byte-identical file, owner-only, with the controller steps printed
    out = tmp / "restored" / "SystemSecrets.json"
    restored = cli(settings, "restore", "secrets", "--stamp", "stamp1", "--key", str(tmp / "key.pem"),
                   "--out", str(out), "--override-database-server", "sql2.contoso.local")
    assert restored.returncode == 0, restored.stderr
    assert out.read_bytes() == (tmp / "SystemSecrets.json").read_bytes()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert 'Restore-AppServiceStamp -FilePath "C:\\AppServiceRecovery\\SystemSecrets.json" -OverrideDatabaseServer ' \
        '"sql2.contoso.local"' in restored.stdout
    for step in ("net stop WebFarmService", "net stop ResourceMetering", "Restore-AppServiceRoles",
                 "net start WebFarmService", "Get-AppServiceSite | Sync-AppServiceObject",
                 "Get-AppServiceServerFarm | Sync-AppServiceObject"):
        assert step in restored.stdout
    by_set = cli(settings, "restore", "secrets", "--stamp", "stamp1", "--set", backup["correlation_id"],
                 "--key", str(tmp / "key.pem"), "--out", str(tmp / "by-set.json"))
    assert by_set.returncode == 0 and (tmp / "by-set.json").read_bytes() == out.read_bytes()
    listing = cli(settings, "secrets", "list", "--stamp", "stamp1")
    assert stored.version_id in listing.stdout and stored.fingerprint[:12] in listing.stdout
    # And the canary never appears in plaintext: logs, CLI output, any message, the store
    assert CANARY not in caplog.text
    for proc in (published, restored, by_set, listing):
        assert CANARY not in proc.stdout + proc.stderr
    assert all(CANARY.encode() not in b for b in spy.drain())
    assert_no_canary_in_store(tmp / "store")
    assert 'stamp="stamp1"' in _text(metrics, "secrets_newest")


def _text(metrics, attr: str) -> str:
    return "\n".join(f"{s.name}{{stamp=\"{s.labels.get('stamp')}\"}} {s.value}"
                     for m in getattr(metrics, attr).collect() for s in m.samples)


def test_duplicate_rotation_stores_nothing_new_and_triggers_no_backup(env):
    settings, tmp, drop = env
    seen: list = []
    app = App(settings, ["secrets", "catalog", tap(seen, "secrets-stored", "artifact-stored")])  # catalog: plans
    # Two rotations of identical content within the same second (a re-export right after the first)
    same_second = datetime(2026, 11, 22, 1, 2, 3, 1000, tzinfo=timezone.utc)
    with running(app), Publisher(settings.broker) as pub:
        for expected, rotated_at in ((1, same_second), (2, same_second + timedelta(milliseconds=300))):
            pub.publish(SecretsRotated(source="test", stamp="stamp1", correlation_id=f"rot-{expected}",
                                       payload=SecretsRotatedPayload(
                                           drop_path=copy_to_drop(tmp / "SystemSecrets.json", settings.secrets,
                                                                  settings.staging),
                                           rotated_by="ops", rotated_at=rotated_at)))
            wait_for(lambda: len([e for e in seen if e.type == "secrets-stored"]) == expected, 30)
        wait_for(lambda: len([e for e in seen if e.type == "artifact-stored"]) == 1, 30, what="first backup")
    first, second = [e.payload for e in seen if e.type == "secrets-stored"]
    assert not first.duplicate and second.duplicate and second.version_id == first.version_id
    # And the newest rotation seen was handled (a duplicate counts: the stored secrets are current)
    newest = (same_second + timedelta(milliseconds=300)).timestamp()
    sample = app.metrics.registry.get_sample_value
    assert sample("appsvc_dr_secrets_last_rotation_seen_timestamp_seconds", {"stamp": "stamp1"}) == newest
    assert sample("appsvc_dr_secrets_last_rotation_handled_timestamp_seconds", {"stamp": "stamp1"}) == newest
    assert len(list((tmp / "store" / "stamp1" / "secrets").iterdir())) == 1
    assert list(drop.iterdir()) == []
    assert len([e for e in seen if e.type == "artifact-stored"]) == 1  # no second backup-due


@pytest.mark.parametrize("content, words", [
    (None, "not found"),
    (b"{ this is not json " + CANARY.encode(), "not valid JSON"),
    (b"", "is empty"),
    (b"{}", "empty JSON object"),
    (json.dumps([CANARY]).encode(), "not an object"),
    (b'{"k": ' + b"[" * 1500 + json.dumps(CANARY).encode(), "nests JSON arrays/objects deeper"),
    (b'{"k": "' + b"x" * 2048 + CANARY.encode() + b'"}', "over the 2048-byte limit"),
])
def test_bad_drop_files_fail_permanently_with_a_hint_and_notification_without_content(
        env, content, words, webhook_server):  # noqa: F811 - fixture
    settings, tmp, drop = env
    settings = settings.model_copy(update={"secrets": settings.secrets.model_copy(update={"max_size": 2048}),
                                           "notify": settings.notify.model_copy(
                                               update={"webhook_urls": [SecretStr(webhook_server.url("/n"))]})})
    webhook_server.reset()
    name = "SystemSecrets.json"
    if content is not None:
        (drop / name).write_bytes(content)
        shutil.chown(drop / name, "root")
    spy = Spy(settings)
    app = App(settings, ["secrets", "notifier"])
    with running(app):
        from contracts import SecretsRotated, SecretsRotatedPayload, utcnow
        from workers.runtime.publisher import Publisher
        with Publisher(settings.broker) as pub:
            pub.publish(SecretsRotated(source="test", stamp="stamp1", correlation_id="rot-1",
                                       payload=SecretsRotatedPayload(drop_path=settings.secrets.drop_path + "\\" + name,
                                                                     rotated_by="ops", rotated_at=utcnow())))
        letters = wait_for(lambda: dead_letters(settings, "secrets"), 30, what="dead letter")
        wait_for(lambda: webhook_server.received("/n"), 30, what="notification")
    assert letters[0].reason == "permanent" and words in letters[0].header("x-dr-error")
    # And the rotation counts as seen but not handled (AppsvcDrSecretsOlderThanLastRotation)
    sample = app.metrics.registry.get_sample_value
    assert sample("appsvc_dr_secrets_last_rotation_seen_timestamp_seconds", {"stamp": "stamp1"}) is not None
    assert sample("appsvc_dr_secrets_last_rotation_handled_timestamp_seconds", {"stamp": "stamp1"}) is None
    assert "Download Secrets" in letters[0].header("x-dr-hint") or "MAX_SIZE" in letters[0].header("x-dr-hint")
    note = json.dumps(webhook_server.received("/n")[0].json)
    assert words in note
    for blob in [note.encode(), *spy.drain(), *spy.drain(dlq_name(settings))]:
        assert CANARY.encode() not in blob
    assert_no_canary_in_store(tmp / "store")


def dlq_name(settings) -> str:
    from workers.runtime.topology import Topology
    return Topology.from_settings(settings.broker, settings.retry).queues("secrets").dlq


def test_unreadable_drop_share_is_a_permanent_failure_naming_the_setting(env):
    settings, tmp, drop = env
    (drop / "SystemSecrets.json").write_text(json.dumps(SECRETS))
    settings = settings.model_copy(update={"staging": settings.staging.model_copy(
        update={"smb_password": settings.staging.smb_password.__class__("wrong-password")})})
    app = App(settings, ["secrets"])
    with running(app):
        from contracts import SecretsRotated, SecretsRotatedPayload, utcnow
        from workers.runtime.publisher import Publisher
        with Publisher(settings.broker) as pub:
            pub.publish(SecretsRotated(source="test", stamp="stamp1", correlation_id="rot-2",
                                       payload=SecretsRotatedPayload(
                                           drop_path=settings.secrets.drop_path + "\\SystemSecrets.json",
                                           rotated_by="ops", rotated_at=utcnow())))
        letters = wait_for(lambda: dead_letters(settings, "secrets"), 30, what="dead letter")
    assert letters[0].reason == "permanent"
    assert "APPSVC_DR_" in letters[0].header("x-dr-hint")
    assert "wrong-password" not in json.dumps(letters[0].summary())
    assert (drop / "SystemSecrets.json").exists()


def test_secrets_worker_refuses_to_start_without_a_certificate(rabbit_vhost):
    settings = settings_for(rabbit_vhost)
    with pytest.raises(ConfigurationError, match="refuses to start without an encryption certificate"):
        App(settings, ["secrets"])


def hook_body(event: dict) -> dict:
    """The body deploy/hooks/Publish-SecretsRotated.ps1 sends to the management API (same shape, field for field)."""
    return {"properties": {"delivery_mode": 2, "content_type": "application/json", "message_id": event["event_id"],
                           "type": "secrets-rotated", "headers": {"x-dr-version": 1}},
            "routing_key": "secrets-rotated", "payload": json.dumps(event, separators=(",", ":")),
            "payload_encoding": "string"}


def test_the_hooks_management_api_publish_is_consumed_by_the_secrets_worker(env):
    # Given the file dropped on the share as the PowerShell hook does, and the hook's JSON event
    from datetime import datetime, timezone
    import uuid

    from tests.fixtures.rabbit import mgmt
    settings, tmp, drop = env
    shutil.copy(tmp / "SystemSecrets.json", drop / "SystemSecrets-hook.json")
    shutil.chown(drop / "SystemSecrets-hook.json", smb_user(settings))
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")   # PowerShell's "o" format
    event = {"event_id": str(uuid.uuid4()), "type": "secrets-rotated", "version": 1, "occurred_at": now,
             "source": "hook:Publish-SecretsRotated.ps1", "stamp": "stamp1", "correlation_id": "20261122T000000Z-abcd1234",
             "causation_id": None, "payload": {"drop_path": settings.secrets.drop_path + "\\SystemSecrets-hook.json",
                                               "rotated_by": "CONTOSO\\operator", "rotated_at": now}}
    seen: list = []
    app = App(settings, ["secrets", tap(seen, "secrets-stored", "artifact-stored")])
    with running(app):
        # When it is published through the management HTTP API
        answer = mgmt("POST", f"/api/exchanges/{settings.broker.vhost}/{settings.broker.exchange}/publish",
                      hook_body(event))
        # Then the broker routed it and the worker stored the secrets from the share
        assert answer == {"routed": True}
        wait_for(lambda: any(e.type == "secrets-stored" for e in seen), 30, what="secrets-stored")
    stored = next(e for e in seen if e.type == "secrets-stored")
    assert str(stored.causation_id) == event["event_id"] and not stored.payload.duplicate
    assert not (drop / "SystemSecrets-hook.json").exists()
    script = (REPO / "deploy/hooks/Publish-SecretsRotated.ps1").read_text()
    for field in ("delivery_mode = 2", 'routing_key      = "secrets-rotated"', 'payload_encoding = "string"',
                  '"x-dr-version" = 1', "/api/exchanges/{1}/{2}/publish", "$answer.routed"):
        assert field in script


def smb_user(settings) -> str:
    return settings.staging.smb_username


def test_a_rotation_asks_only_for_what_the_site_backs_up(env):
    settings, tmp, _ = env
    settings = settings.model_copy(update={"components": ("secrets", "databases")})
    spy = Spy(settings)
    with running(App(settings, ["secrets"])):
        published = cli(settings, "publish", "secrets-rotated", "--file", str(tmp / "SystemSecrets.json"))
        assert published.returncode == 0, published.stderr
        backups: list[dict] = []

        def triggered() -> bool:
            events = (json.loads(b[:b.index(b"}{") + 1] if b"}{" in b else b) for b in spy.drain())
            backups.extend(e for e in events if e["type"] == "backup-due")
            return bool(backups)
        wait_for(triggered, 30, what="the triggered backup-due")
    assert backups[0]["payload"]["components"] == ["secrets", "databases"]
