"""Retention covers the Function Apps copies: when the catalog's retention (on set completion) deletes a backup
set, the set's index and summary under ``<stamp>/functions-blobs/<account>/`` are forgotten and the blob packs
no remaining set references are deleted; everything a kept set needs stays (it restores and drills), and an
index that cannot be trusted stops the deletion for its account. Real Azurite, RabbitMQ and a local store."""
from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from datetime import timedelta

import pytest
from azure.storage.blob import BlobServiceClient

from tests.integration.test_functions_azurite import KiB, cli_env, picture, populate, run_backup, worker_settings
from workers.artifacts.functionspacks import prune_functions
from workers.artifacts.service import RECORD_SUFFIX, ArtifactStore
from workers.cli import main
from workers.functions.layout import account_prefix, blob_id
from workers.storage.local import LocalStore

pytestmark = pytest.mark.integration
FIRST, SECOND = "20261203T010000Z-0b1b2c3d", "20261203T020000Z-0b1b2c3e"


def objects(root, prefix: str) -> set[str]:
    return {i.key for i in LocalStore(root).list(prefix) if not i.key.endswith(RECORD_SUFFIX)}


def index(root, set_id: str) -> dict:
    out = io.BytesIO()
    ArtifactStore(LocalStore(root)).get(f"{account_prefix('stamp1', 'source')}/index/{set_id}.json", out)
    return json.loads(out.getvalue())["blobs"]


def test_retention_frees_the_packs_of_deleted_sets_and_keeps_what_the_kept_set_needs(rabbit_vhost, tmp_path,
                                                                                      azurite, monkeypatch, capsys):
    tag = uuid.uuid4().hex[:6]
    cs = azurite.connection_string("source")
    populate(cs, tag)
    # Given the worker and the catalog keeping only the newest complete set (packs older than 1 s may go)
    settings = worker_settings(rabbit_vhost, tmp_path, cs)
    settings = settings.model_copy(update={"retention": settings.retention.model_copy(
        update={"keep_last": 1, "incomplete_grace": timedelta(seconds=1)})})
    store, prefix = tmp_path / "store", "stamp1/functions-blobs/source/"
    run_backup(settings, FIRST)
    first = index(store, FIRST)
    big0, big1 = (first[blob_id(f"payloads-{tag}", f"big/{i}.bin")][1] for i in (0, 1))
    packs_before = objects(store, prefix + "packs/")
    # When one large blob is overwritten and another deleted, and the next set completes (retention runs)
    payloads = BlobServiceClient.from_connection_string(cs).get_container_client(f"payloads-{tag}")
    payloads.upload_blob("big/0.bin", hashlib.sha256(b"new").digest() * (40 * KiB), overwrite=True)
    payloads.delete_blob("big/1.bin")
    time.sleep(1.5)
    run_backup(settings, SECOND)
    # Then the first set is gone with its index and summary, the two packs only it needed are deleted, and every
    # pack the second set references is still there
    assert objects(store, "stamp1/" + FIRST) == set()
    assert objects(store, prefix + "index/") == {prefix + f"index/{SECOND}.json"}
    assert objects(store, prefix + "summary/") == {prefix + f"summary/{SECOND}.json"}
    packs_after = objects(store, prefix + "packs/")
    needed = {entry[1] for entry in index(store, SECOND).values()}
    assert needed <= packs_after and packs_after == needed
    assert packs_before - packs_after == {big0, big1}
    assert not any(LocalStore(store).exists(k + RECORD_SUFFIX) for k in (big0, big1))
    expected = picture(cs, tag)
    # And the kept set restores into a new account item by item, and drills
    key = cli_env(monkeypatch, settings, tmp_path, azurite)
    assert main(["restore", "functions", "--stamp", "stamp1", "--set", SECOND,
                 "--target-connection-string-env", "NEW_ACCOUNT_CS", "--key", str(key)]) == 0
    assert picture(azurite.connection_string("target"), tag) == expected
    assert main(["drill", "--stamp", "stamp1", "--set", SECOND, "--key", str(key)]) == 0
    capsys.readouterr()

    # When the kept set's index is replaced by an unsigned one that lists no pack (a forged index)
    forged = f"{prefix}index/{SECOND}.json"
    LocalStore(store).delete(forged + RECORD_SUFFIX)
    LocalStore(store).delete(forged)
    ArtifactStore(LocalStore(store)).put(forged, lambda: io.BytesIO(b'{"format":1,"blobs":{}}'))
    signed = ArtifactStore.from_settings(settings.store, settings.encryption)
    later = prune_functions(signed, "stamp1", grace=settings.retention.grace)
    # Then nothing of the account is deleted and the problem is reported
    assert later.deleted_packs == 0 and objects(store, prefix + "packs/") == packs_after
    assert later.problems and "cannot be read or trusted" in later.problems[0]
    # When a remaining set's index is missing altogether, the same (the manifest needs packs no index names)
    LocalStore(store).delete(forged + RECORD_SUFFIX)
    LocalStore(store).delete(forged)
    gone = prune_functions(signed, "stamp1", grace=settings.retention.grace)
    assert gone.deleted_packs == 0 and "no index" in gone.problems[0]
    assert objects(store, prefix + "packs/") == packs_after
