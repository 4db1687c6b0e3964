"""Access policies and blob snapshots, against Azurite: a container's public access level and stored access
policies, a queue's and a table's stored access policies, and a blob's snapshots are backed up and restored into
a new account (snapshots as new snapshots of the blob, oldest first, with their content and metadata); an
unchanged snapshot is not read again."""
from __future__ import annotations

import datetime as dt
import hashlib
import uuid

from azure.data.tables import TableAccessPolicy, TableServiceClient
from azure.storage.blob import AccessPolicy as BlobAccessPolicy, BlobServiceClient
from azure.storage.queue import AccessPolicy as QueueAccessPolicy, QueueServiceClient

import pytest

from tests.fixtures.azurite import empty_account
from tests.fixtures.storage_proxy import storage_proxy
from workers.artifacts.service import ArtifactStore
from workers.functions.backup import backup_account
from workers.functions.client import open_account
from workers.functions.restore import Restorer
from workers.functions.settings import FunctionsSettings
from workers.storage.local import LocalStore

pytestmark = pytest.mark.integration
START, EXPIRY = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2027, 6, 30, tzinfo=dt.timezone.utc)


def populate(cs: str, tag: str) -> None:
    blobs = BlobServiceClient.from_connection_string(cs)
    shared = blobs.create_container(f"shared-{tag}")
    shared.set_container_access_policy({"readers": BlobAccessPolicy(permission="rl", start=START, expiry=EXPIRY)},
                                       public_access="blob")
    blob = shared.upload_blob("state.json", b'{"v": 1}', metadata={"v": "1"})
    blob.create_snapshot()
    blob.upload_blob(b'{"v": 2}', overwrite=True, metadata={"v": "2"})
    blob.create_snapshot()
    blob.upload_blob(b'{"v": 3, "now": true}', overwrite=True, metadata={"v": "3"})
    blobs.create_container(f"private-{tag}").upload_blob("x", b"x")
    queue = QueueServiceClient.from_connection_string(cs).create_queue(f"jobs-{tag}")
    queue.set_queue_access_policy({"enqueue": QueueAccessPolicy(permission="a", start=START, expiry=EXPIRY)})
    table = TableServiceClient.from_connection_string(cs).create_table(f"Leases{tag}")
    table.set_table_access_policy({"reader": TableAccessPolicy(permission="r", start=START, expiry=EXPIRY)})


def policy_list(identifiers) -> list:
    pairs = identifiers.items() if isinstance(identifiers, dict) else ((i.id, i.access_policy) for i in identifiers)
    return sorted((i, p.permission, dt.datetime.fromisoformat(str(p.start)) if p.start else None,
                   dt.datetime.fromisoformat(str(p.expiry)) if p.expiry else None) for i, p in pairs)


def picture(cs: str, tag: str) -> dict:
    blobs = BlobServiceClient.from_connection_string(cs)
    out = {}
    for name in (f"shared-{tag}", f"private-{tag}"):
        c = blobs.get_container_client(name)
        access = c.get_container_access_policy()
        history = [(b.snapshot is not None, dict(b.metadata),
                    hashlib.sha256(blobs.get_blob_client(name, b.name, snapshot=b.snapshot).download_blob()
                                   .readall()).hexdigest())
                   for b in c.list_blobs(include=["snapshots", "metadata"])]
        out[name] = (access["public_access"], policy_list(access["signed_identifiers"]), history)
    out["queue"] = policy_list(QueueServiceClient.from_connection_string(cs).get_queue_client(f"jobs-{tag}")
                               .get_queue_access_policy())
    out["table"] = policy_list(TableServiceClient.from_connection_string(cs).get_table_client(f"Leases{tag}")
                               .get_table_access_policy())
    return out


def test_access_policies_and_snapshots_are_backed_up_and_restored(tmp_path, azurite):
    tag = uuid.uuid4().hex[:6]
    cs = azurite.connection_string("source")
    populate(cs, tag)
    expected = picture(cs, tag)
    assert expected[f"shared-{tag}"][0] == "blob" and len(expected[f"shared-{tag}"][2]) == 3   # as set up
    store = ArtifactStore(LocalStore(tmp_path / "store"))
    with storage_proxy(azurite.host, azurite.blob_port) as proxy:
        proxied = azurite.connection_string("source", ports=(proxy.port, azurite.queue_port, azurite.table_port))
        settings = FunctionsSettings(accounts=[{"name": "source", "connection_string": proxied}], retries=1)
        # When the account is backed up
        first = backup_account(settings, store, store, settings.accounts[0], "stamp1", "20261203T080000Z-0d1b")
        # Then the two snapshots are in the copy
        assert first["blob_snapshots"] >= 2
        # When it is backed up again unchanged, no blob and no snapshot is read again
        proxy.reset_counts()
        again = backup_account(settings, store, store, settings.accounts[0], "stamp1", "20261203T090000Z-0d1c")
        assert proxy.downloads == 0 == again["blobs_read"] and again["blob_snapshots"] == first["blob_snapshots"]
    # When the copy is restored into a new account
    empty_account(azurite.connection_string("target"))
    target = open_account("target", azurite.connection_string("target"), retries=1, timeout=30)
    try:
        report = Restorer(store, target, keys=None, containers=[f"shared-{tag}", f"private-{tag}"]).run(
            "stamp1", "20261203T090000Z-0d1c", "source")
    finally:
        target.close()
    # Then public access, every stored access policy, and the snapshots (content, metadata, order) are back
    assert report.ok, report.problems
    assert picture(azurite.connection_string("target"), tag) == expected
