"""A Function Apps manifest read from the store is hostile (no verify key configured here, as an operator may run):
against Azurite, a genuine copy is restored correctly through every content path (small blobs from memory, a
blob sliced out of a pack and a blob alone in its pack staged as blocks), and each forged or damaged manifest is
refused with the line and the field named, *before anything is written to the target account*. A blob whose
bytes do not match the manifest's SHA-256 never becomes visible (its blocks are not committed)."""
from __future__ import annotations

import hashlib
import io
import json
import uuid

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from tests.fixtures.azurite import empty_account
from workers.artifacts.service import ArtifactStore
from workers.functions.backup import backup_account
from workers.functions.client import open_account
from workers.functions.layout import manifest_key
from workers.functions.records import ManifestError
from workers.functions.restore import Restorer
from workers.functions.settings import FunctionsSettings
from workers.runtime.errors import PermanentError
from workers.storage.local import LocalStore

pytestmark = pytest.mark.integration
MiB = 1 << 20
STAMP, SET = "stamp1", "20261203T100000Z-f0f0"


@pytest.fixture
def copy(tmp_path, azurite):
    """A genuine backup of a small account: 2 small blobs, one of 1.5 MiB (packed with them, so sliced out of a
    pack), one of 5 MiB (alone in its pack), a queue with 2 messages, a table with one typed entity. Both accounts
    start and end empty."""
    cs = azurite.connection_string("source")
    empty_account(cs)
    empty_account(azurite.connection_string("target"))
    tag = uuid.uuid4().hex[:6]
    container = BlobServiceClient.from_connection_string(cs).create_container(f"data-{tag}")
    contents = {"a.json": b'{"a": 1}', "b.txt": b"bee", "medium.bin": bytes(range(256)) * (6 * 1024),
                "large.bin": hashlib.sha256(b"x").digest() * (5 * MiB // 32)}
    for name, data in contents.items():
        container.upload_blob(name, data, metadata={"k": "v"})
    queue = QueueServiceClient.from_connection_string(cs).create_queue(f"work-{tag}")
    queue.send_message("one")
    queue.send_message("two")
    TableServiceClient.from_connection_string(cs).create_table(f"T{tag}").create_entity(
        {"PartitionKey": "p", "RowKey": "r", "Count": 7})
    store = ArtifactStore(LocalStore(tmp_path / "store"))
    settings = FunctionsSettings(accounts=[{"name": "source", "connection_string": cs}], retries=1)
    backup_account(settings, store, store, settings.accounts[0], STAMP, SET)
    with store.open_plain(manifest_key(STAMP, SET, "source")) as plain:
        lines = [json.loads(line) for line in plain.read().splitlines() if line.strip()]
    yield store, lines, contents, tag
    empty_account(cs)           # the session's Azurite is shared: leave both accounts as other tests expect
    empty_account(azurite.connection_string("target"))


def forge(store: ArtifactStore, lines: list, set_id: str) -> None:
    body = b"".join(json.dumps(line).encode() + b"\n" if isinstance(line, dict) else line for line in lines)
    store.put(manifest_key(STAMP, set_id, "source"), lambda: io.BytesIO(body))


def restore(azurite, store: ArtifactStore, set_id: str):
    target = open_account("target", azurite.connection_string("target"), retries=1, timeout=30)
    try:
        return Restorer(store, target, keys=None).run(STAMP, set_id, "source")
    finally:
        target.close()


def untouched(azurite) -> bool:
    cs = azurite.connection_string("target")
    return not (list(BlobServiceClient.from_connection_string(cs).list_containers())
                or list(QueueServiceClient.from_connection_string(cs).list_queues())
                or list(TableServiceClient.from_connection_string(cs).list_tables()))


def blob_line(lines: list, name: str) -> dict:
    return next(line for line in lines if line["t"] == "blob" and line["name"] == name)


def test_the_genuine_copy_restores_every_content_path(azurite, copy):
    store, lines, contents, tag = copy
    report = restore(azurite, store, SET)
    assert report.ok, report.problems
    client = BlobServiceClient.from_connection_string(azurite.connection_string("target"))
    for name, data in contents.items():
        assert client.get_blob_client(f"data-{tag}", name).download_blob().readall() == data
    assert (report.blobs, report.messages, report.entities) == (4, 2, 1)


def _outside(lines, tag):
    blob_line(lines, "a.json")["loc"][0] = f"{STAMP}/secrets/20261203T000000Z.json"


def _other_account(lines, tag):
    loc = blob_line(lines, "a.json")["loc"]
    loc[0] = loc[0].replace("/source/", "/other/")


def _bad_container(lines, tag):
    for line in lines:
        for field in ("name", "container"):
            if line.get(field) == f"data-{tag}" and line["t"] in ("container", "blob"):
                line[field] = "../data"


def _truncated(lines, tag):
    del lines[-2:]


def _orphan_message(lines, tag):
    message = next(i for i, line in enumerate(lines) if line["t"] == "message")
    queue = next(i for i, line in enumerate(lines) if line["t"] == "queue")
    lines.insert(queue, lines.pop(message))


def _bad_entity(lines, tag):
    entity = next(line for line in lines if line["t"] == "entity")
    entity["props"]["Count"] = ["Edm.Int64", "12; DROP"]


def _content_settings(lines, tag):
    blob_line(lines, "b.txt")["content_settings"]["raw_response_hook"] = "x"


def _beyond_the_pack(lines, tag):
    loc = blob_line(lines, "medium.bin")["loc"]
    loc[2] += 10 * MiB


def _huge_line(lines, tag):
    lines.insert(2, b'{"t": "queue", "name": "' + b"q" * (5 * MiB) + b'"}\n')


@pytest.mark.parametrize("damage, error", [
    (_outside, "outside this account's packs"),
    (_other_account, "outside this account's packs"),
    (_bad_container, "not a valid Azure Storage container name"),
    (_truncated, "is incomplete"),
    (_orphan_message, "which no earlier line declares"),
    (_bad_entity, "is not an Edm.Int64 value"),
    (_content_settings, "content settings must be"),
    (_beyond_the_pack, "beyond the end of its pack"),
    (_huge_line, "a line longer than 4 MiB"),
])
def test_a_forged_or_damaged_manifest_is_refused_before_anything_is_written(azurite, copy, damage, error):
    store, lines, _, tag = copy
    forged = "20261203T110000Z-f0f1"
    lines[0]["backup_set_id"] = forged
    damage(lines, tag)
    forge(store, lines, forged)
    with pytest.raises(ManifestError, match=error) as caught:
        restore(azurite, store, forged)
    assert "another backup set" in caught.value.hint
    assert untouched(azurite)


def test_a_manifest_copied_to_another_set_is_refused(azurite, copy):
    store, lines, _, _ = copy
    forge(store, lines, "20261203T120000Z-f0f2")          # set SET's manifest, word for word, as another set's
    with pytest.raises(ManifestError, match="belongs to"):
        restore(azurite, store, "20261203T120000Z-f0f2")
    assert untouched(azurite)


@pytest.mark.parametrize("name", ["medium.bin", "large.bin"])
def test_a_streamed_blob_whose_bytes_do_not_match_never_becomes_visible(azurite, copy, name):
    store, lines, _, tag = copy
    forged = "20261203T130000Z-f0f3"
    lines[0]["backup_set_id"] = forged
    blob_line(lines, name)["sha256"] = hashlib.sha256(b"something else").hexdigest()
    forge(store, lines, forged)
    with pytest.raises(PermanentError, match=f"blob data-{tag}/{name}: content does not match"):
        restore(azurite, store, forged)
    blob = BlobServiceClient.from_connection_string(azurite.connection_string("target")).get_blob_client(
        f"data-{tag}", name)
    with pytest.raises(ResourceNotFoundError):
        blob.get_blob_properties()


@pytest.mark.parametrize("damage, error", [(_outside, "outside this account's packs"), (_truncated, "incomplete"),
                                           (_beyond_the_pack, "beyond the end of its pack")])
def test_the_drills_check_of_a_copy_refuses_the_same_forgeries(copy, damage, error):
    from workers.functions.verify import verify_copy
    store, lines, _, tag = copy
    assert verify_copy(store, None, STAMP, SET, "source").blobs == 4        # the genuine copy passes
    forged = "20261203T140000Z-f0f4"
    lines[0]["backup_set_id"] = forged
    damage(lines, tag)
    forge(store, lines, forged)
    with pytest.raises(ManifestError, match=error):
        verify_copy(store, None, STAMP, forged, "source")


def test_the_drills_check_finds_a_streamed_blob_that_does_not_match(copy):
    from workers.functions.verify import verify_copy
    store, lines, _, tag = copy
    forged = "20261203T150000Z-f0f5"
    lines[0]["backup_set_id"] = forged
    blob_line(lines, "large.bin")["sha256"] = "0" * 64
    forge(store, lines, forged)
    with pytest.raises(PermanentError, match=f"blob data-{tag}/large.bin: content does not match"):
        verify_copy(store, None, STAMP, forged, "source")
