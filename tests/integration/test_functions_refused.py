"""A Function Apps copy never holds what its own restore refuses, against Azurite and real RabbitMQ: a blob whose
content setting is longer than a restore takes is left out of the copy and named (the account's result and a
warning with the fix), and the rest of the account restores. Before, the backup wrote it and every restore of the
account refused the whole manifest."""
from __future__ import annotations

import hashlib
import uuid

import pytest
from azure.storage.blob import BlobServiceClient, ContentSettings

from tests.fixtures.azurite import empty_account
from tests.fixtures.rabbit import running, tap, wait_for
from tests.integration.test_functions_azurite import TYPES, backup_due, worker_settings
from workers.app import App
from workers.artifacts.service import ArtifactStore
from workers.functions.client import open_account
from workers.functions.restore import Restorer
from workers.runtime.publisher import Publisher
from workers.storage.local import LocalStore

pytestmark = pytest.mark.integration


@pytest.fixture
def odd_container(azurite):
    """A container with two ordinary blobs and one whose content-disposition is 1,100 characters long (the
    service takes it; a restore does not), deleted afterwards (the account is shared by the session's tests)."""
    name = f"odd-{uuid.uuid4().hex[:6]}"
    service = BlobServiceClient.from_connection_string(azurite.connection_string("source"))
    container = service.create_container(name)
    for i in range(2):
        container.upload_blob(f"ok/{i}.txt", f"fine {i}".encode())
    container.upload_blob("long-header.bin", b"odd", content_settings=ContentSettings(
        content_disposition="attachment; filename=" + "x" * 1078 + ".bin"))
    yield name
    service.delete_container(name)


def test_a_blob_its_restore_would_refuse_is_left_out_and_named_and_the_rest_restores(rabbit_vhost, tmp_path,
                                                                                      azurite, odd_container):
    cs, name = azurite.connection_string("source"), odd_container
    settings = worker_settings(rabbit_vhost, tmp_path, cs)
    settings = settings.model_copy(update={"store": settings.store.model_copy(update={"local_path": str(
        tmp_path / "store")}), "encryption": settings.encryption.model_copy(update={"certificate": None})})
    set_id = "20261204T060000Z-0d1b2c3d"
    seen: list = []
    # When the functions worker backs the account up
    with running(App(settings, ["functions", "catalog", tap(seen, *TYPES)])):
        with Publisher(settings.broker) as pub:
            pub.publish(backup_due(set_id))
        wait_for(lambda: {"functions-backed-up", "job-failed"} <= {e.type for e in seen}, 120,
                 what="functions-backed-up and its warning")
    # Then the odd blob is named as left out, the result is partial, and a warning says how to fix it
    result = next(e for e in seen if e.type == "functions-backed-up").payload
    account = result.accounts[0]
    assert result.partial and account.items_refused == 1
    assert account.refused == (f"blob {name}/long-header.bin: content settings must be content_type, "
                               "content_encoding, content_language, content_disposition, cache_control and "
                               "content_md5 (strings)",)
    warning = next(e for e in seen if e.type == "job-failed").payload
    assert warning.severity == "warning" and warning.error_class == "ItemsNotRestorable"
    assert f"{name}/long-header.bin" in warning.message and "storage account" in warning.hint
    # And the copy restores: the container and its ordinary blobs come back
    empty_account(azurite.connection_string("target"))
    target = open_account("target", azurite.connection_string("target"), retries=1, timeout=30)
    try:
        report = Restorer(ArtifactStore(LocalStore(tmp_path / "store")), target, keys=None,
                          containers=[name]).run("stamp1", set_id, "source")
    finally:
        target.close()
    assert report.ok, report.problems
    restored = BlobServiceClient.from_connection_string(azurite.connection_string("target")) \
        .get_container_client(name)
    got = {b.name: hashlib.sha256(restored.download_blob(b.name).readall()).hexdigest()
           for b in restored.list_blobs()}
    assert got == {f"ok/{i}.txt": hashlib.sha256(f"fine {i}".encode()).hexdigest() for i in range(2)}
