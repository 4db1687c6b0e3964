"""The `functions` component against Azurite (the Azure Storage emulator) and real RabbitMQ: an account with many
small and a few large blobs, a queue and a table → backed up by the worker (encrypted, signed) → changed →
backed up again (only the changes are downloaded: a proxy in front of the blob service counts the GETs) →
restored by `appsvc-dr restore functions` into a second account and compared item by item."""
from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import uuid

import pytest
from azure.data.tables import EdmType, EntityProperty, TableServiceClient
from azure.storage.blob import BlobServiceClient, ContentSettings
from azure.storage.queue import QueueServiceClient

from contracts import BackupDue, BackupDuePayload
from tests.fixtures.azurite import empty_account
from tests.fixtures.rabbit import running, settings_for, tap, wait_for
from tests.fixtures.storage_proxy import storage_proxy
from tests.unit.certs import make_cert, signing_settings
from workers.app import App
from workers.artifacts.service import ArtifactStore
from workers.cli import main
from workers.functions.backup import backup_account
from workers.runtime.errors import PermanentError, TransientError
from workers.runtime.publisher import Publisher
from workers.storage.local import LocalStore

pytestmark = pytest.mark.integration
TYPES = ("functions-backed-up", "artifact-stored", "job-failed", "backup-set-completed")
KiB = 1024
SMALL = 120


def populate(cs: str, tag: str) -> None:
    """What a Function App leaves in its storage account: host locks and timer state (small blobs with
    metadata), payloads (large blobs), a queue of work items and a table of Durable Functions history."""
    blobs = BlobServiceClient.from_connection_string(cs)
    hosts = blobs.create_container(f"azure-webjobs-hosts-{tag}", metadata={"owner": "functions"})
    for i in range(SMALL):
        hosts.upload_blob(f"timers/app/Func{i}/status", json.dumps({"Last": i}).encode() * (1 + i % 7),
                          content_settings=ContentSettings(content_type="application/json", cache_control="no-cache"),
                          metadata={"index": str(i), "kind": "timer"})
    payloads = blobs.create_container(f"payloads-{tag}")
    for i in range(3):
        payloads.upload_blob(f"big/{i}.bin", hashlib.sha256(str(i).encode()).digest() * (40 * KiB),  # 1.25 MiB
                             content_settings=ContentSettings(content_type="application/octet-stream",
                                                              content_disposition=f"attachment; filename={i}.bin"),
                             metadata={"size": "large"})
    queue = QueueServiceClient.from_connection_string(cs).create_queue(f"work-items-{tag}", metadata={"q": "1"})
    for i in range(5):
        queue.send_message(f"item {i}")
    table = TableServiceClient.from_connection_string(cs).create_table(f"History{tag}")
    for i in range(6):
        table.create_entity({"PartitionKey": "instance-1", "RowKey": f"{i:04d}", "EventType": "TaskScheduled",
                             "Sequence": i, "Big": EntityProperty(2**40 + i, EdmType.INT64),
                             "Ratio": i / 3, "Done": i % 2 == 0, "Id": uuid.UUID(int=i + 1),
                             "At": dt.datetime(2026, 12, 1, 10, i, tzinfo=dt.timezone.utc),
                             "Raw": bytes([i, 255 - i])})


def picture(cs: str, tag: str) -> dict:
    """Everything a restore must bring back, as plain data."""
    blobs = BlobServiceClient.from_connection_string(cs)
    out: dict = {"containers": {}, "queues": {}, "tables": {}}
    for c in blobs.list_containers(include_metadata=True):
        if not c.name.endswith(tag):
            continue
        items = {}
        for b in blobs.get_container_client(c.name).list_blobs(include=["metadata"]):
            data = blobs.get_blob_client(c.name, b.name).download_blob().readall()
            cs_ = b.content_settings
            items[b.name] = (hashlib.sha256(data).hexdigest(), b.size, cs_.content_type, cs_.cache_control,
                             cs_.content_disposition, dict(b.metadata))
        out["containers"][c.name] = (dict(c.metadata or {}), items)
    queues = QueueServiceClient.from_connection_string(cs)
    for q in queues.list_queues(include_metadata=True):
        if q.name.endswith(tag):
            out["queues"][q.name] = (dict(q.metadata or {}), [m.content for m in
                                                        queues.get_queue_client(q.name).peek_messages(32)])
    tables = TableServiceClient.from_connection_string(cs)
    for t in tables.list_tables():
        if t.name.endswith(tag):
            out["tables"][t.name] = sorted(
                (tuple(sorted((k, repr(v)) for k, v in e.items())) for e in
                 tables.get_table_client(t.name).list_entities()))
    return out


def backup_due(set_id: str) -> BackupDue:
    return BackupDue(source="test", stamp="stamp1", correlation_id=set_id,
                     payload=BackupDuePayload(backup_set_id=set_id, components=("functions",)))


@contextlib.contextmanager
def proxied_source(azurite):
    """The source account's connection string with its blob service behind a counting/throttling proxy."""
    with storage_proxy(azurite.host, azurite.blob_port) as proxy:
        yield proxy, azurite.connection_string("source", ports=(proxy.port, azurite.queue_port, azurite.table_port))


def worker_settings(vhost, tmp_path, cs: str, **functions):
    cert = tmp_path / "cert.pem"
    cert.write_bytes(make_cert().cert_pem)
    settings = settings_for(vhost, store={"kind": "local", "local_path": str(tmp_path / "store")},
                            encryption={"certificate": str(cert), **signing_settings(tmp_path)},
                            functions={"accounts": [{"name": "source", "connection_string": cs}],
                                       "large_blob": 512 * KiB, "pack_size": 1024 * KiB, "retries": 2,
                                       "backoff": 0.2, **functions})
    return settings.model_copy(update={"components": ("functions",)})


def cli_env(monkeypatch, settings, tmp_path, azurite):
    """The CLI's environment for the worker's store (local, under tmp_path/store), NEW_ACCOUNT_CS naming the
    target account; returns the private key's path."""
    for name, value in {"STORE__KIND": "local", "STORE__LOCAL_PATH": str(tmp_path / "store"),
                        "ENCRYPTION__SIGNING_KEY": settings.encryption.signing_key,
                        "ENCRYPTION__VERIFY_KEYS": json.dumps([str(p) for p in settings.encryption.verify_keys]),
                        "FUNCTIONS__ACCOUNTS": json.dumps([{"name": "source", "account_key": "unused"}])}.items():
        monkeypatch.setenv(f"APPSVC_DR_{name}", str(value))
    key = tmp_path / "key.pem"
    key.write_bytes(make_cert().key_pem())
    monkeypatch.setenv("NEW_ACCOUNT_CS", azurite.connection_string("target"))
    empty_account(azurite.connection_string("target"))
    return key


def run_backup(settings, set_id: str) -> list:
    seen: list = []
    with running(App(settings, ["functions", "catalog", tap(seen, *TYPES)])):
        with Publisher(settings.broker) as pub:
            pub.publish(backup_due(set_id))
        wait_for(lambda: {"functions-backed-up", "backup-set-completed"} <= {e.type for e in seen}
                 or any(e.type == "job-failed" for e in seen), 180, what="functions-backed-up and the set completed")
    assert not [e.payload for e in seen if e.type == "job-failed"]
    return seen


def test_backup_change_backup_and_restore_into_a_new_account(rabbit_vhost, tmp_path, azurite, monkeypatch, capsys):
    tag = uuid.uuid4().hex[:6]
    empty_account(azurite.connection_string("source"))     # exact counts below: no other test's containers
    with proxied_source(azurite) as (proxy, cs):
        # Given a Function App's storage account and the functions worker
        populate(cs, tag)
        settings = worker_settings(rabbit_vhost, tmp_path, cs)
        # When a backup of the component is due
        seen = run_backup(settings, "20261203T010000Z-0a1b2c3d")
        # Then every blob was downloaded once, the account reported and the set completed with the component
        first = next(e for e in seen if e.type == "functions-backed-up").payload.accounts[0]
        assert proxy.downloads == SMALL + 3 == first.blobs_read == first.blobs
        assert (first.queues, first.messages, first.tables, first.entities) == (1, 5, 1, 6)
        done = next(e for e in seen if e.type == "backup-set-completed")
        assert done.payload.components == ("functions",)
        stored = next(e for e in seen if e.type == "artifact-stored").payload
        assert stored.component == "functions" and stored.encrypted
        # When two small blobs change, one is added, one deleted, and the next backup runs
        blobs = BlobServiceClient.from_connection_string(cs)
        hosts = blobs.get_container_client(f"azure-webjobs-hosts-{tag}")
        hosts.upload_blob("timers/app/Func1/status", b'{"Last": "changed"}', overwrite=True,
                          content_settings=ContentSettings(content_type="application/json"), metadata={"v": "2"})
        hosts.get_blob_client("timers/app/Func2/status").set_blob_metadata({"v": "3"})
        hosts.upload_blob("timers/app/New/status", b"{}")
        hosts.delete_blob("timers/app/Func3/status")
        proxy.reset_counts()
        seen = run_backup(settings, "20261203T020000Z-0a1b2c3e")
        # Then only the three changed or new blobs were downloaded; the rest were carried over unread
        second = next(e for e in seen if e.type == "functions-backed-up").payload.accounts[0]
        assert proxy.downloads == 3 == second.blobs_read
        assert second.blobs_unchanged == SMALL + 3 - 1 - 2 and second.blobs == SMALL + 3
        expected = picture(cs, tag)
    # When the second set is restored into a new, empty account with the CLI
    key = cli_env(monkeypatch, settings, tmp_path, azurite)
    assert main(["restore", "functions", "--stamp", "stamp1", "--set", "20261203T020000Z-0a1b2c3e",
                 "--target-connection-string-env", "NEW_ACCOUNT_CS", "--key", str(key)]) == 0
    out = capsys.readouterr().out
    # Then the new account holds the same containers, blobs (content, properties, metadata), queue messages
    # and typed entities, the counts were verified, the manual steps printed, and no key was printed
    assert picture(azurite.connection_string("target"), tag) == expected
    assert f"{SMALL + 3} blobs" in out and "counts verified" in out and "AzureWebJobsStorage" in out
    assert azurite.keys["target"] not in out and azurite.keys["source"] not in out
    # When the same restore runs again into the now non-empty account, it refuses (fail closed)
    assert main(["restore", "functions", "--stamp", "stamp1", "--set", "20261203T020000Z-0a1b2c3e",
                 "--target-connection-string-env", "NEW_ACCOUNT_CS", "--key", str(key)]) == 2
    assert "already holds blobs" in capsys.readouterr().err
    # When the set is drilled, it passes: every blob of the copy read back from the store and its SHA-256 checked
    assert main(["drill", "--stamp", "stamp1", "--set", "20261203T020000Z-0a1b2c3e", "--key", str(key)]) == 0
    out = capsys.readouterr().out
    assert "functions" in out and f"{SMALL + 3} blobs (every SHA-256 verified)" in out


def direct_backup(settings, tmp_path, set_id: str) -> dict:
    """One account through backup_account (no broker), into a plain local store."""
    store = ArtifactStore(LocalStore(tmp_path / "direct"))
    meta = ArtifactStore(store.backend, certificate=None)
    s = settings.functions
    return backup_account(s, store, meta, s.accounts[0], "stamp1", set_id)


def test_throttling_is_retried_with_backoff_then_left_to_the_runner(rabbit_vhost, tmp_path, azurite):
    tag = uuid.uuid4().hex[:6]
    with proxied_source(azurite) as (proxy, cs):
        populate(cs, tag)
        settings = worker_settings(rabbit_vhost, tmp_path, cs, downloads=1)
        # When the blob service answers 503 ServerBusy to the next two requests
        proxy.throttle(2)
        summary = direct_backup(settings, tmp_path, "20261203T030000Z-0a1b2c3f")
        # Then the SDK retried them with backoff and the backup is complete
        assert proxy.busy_served == 2 and summary["blobs"] >= SMALL + 3
        # When the service stays busy beyond the retries
        proxy.throttle(10_000)
        with pytest.raises(TransientError) as caught:
            direct_backup(settings, tmp_path, "20261203T040000Z-0a1b2c40")
        # Then the job fails as transient (the runner retries it later with its own backoff), saying why
        assert "busy" in caught.value.message and "ServerBusy" in caught.value.message
        assert "retried" in caught.value.hint.lower()


def test_bad_credentials_dead_letter_with_a_hint_and_never_show_the_key(rabbit_vhost, tmp_path, azurite, caplog):
    # Given the worker configured with a wrong account key
    wrong = base64.b64encode(b"a-wrong-key-that-must-never-be-printed").decode()
    settings = worker_settings(rabbit_vhost, tmp_path, azurite.connection_string("source", key=wrong))
    # When a backup is due
    seen: list = []
    with running(App(settings, ["functions", "catalog", tap(seen, *TYPES)])):
        with Publisher(settings.broker) as pub:
            pub.publish(backup_due("20261203T050000Z-0a1b2c41"))
        wait_for(lambda: any(e.type == "job-failed" for e in seen), 120, what="job-failed")
    # Then the job fails at once (permanent: no retry) with a hint naming the setting, and the key is nowhere
    failed = next(e for e in seen if e.type == "job-failed").payload
    assert not failed.will_retry and failed.worker == "functions"
    assert "access refused" in failed.message and "APPSVC_DR_FUNCTIONS__ACCOUNTS" in failed.hint
    assert wrong not in failed.model_dump_json() and wrong not in caplog.text
    with pytest.raises(PermanentError):
        direct_backup(settings, tmp_path, "20261203T050000Z-0a1b2c42")
