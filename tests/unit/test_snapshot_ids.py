"""A snapshot id names store objects and a local cache file: one read from the store (a set's file-share
reference) or given on the command line is checked before it names anything, so a forged reference cannot
point a restore at another stamp's snapshot or read a file outside the cache."""
from __future__ import annotations

import io
import json

import pytest

from workers.artifacts.service import ArtifactStore
from workers.artifacts.setmanifest import artifact_key
from workers.repository.repo import Repository
from workers.repository.snapshots import snapshot_of_set
from workers.runtime.errors import PermanentError
from workers.storage.local import LocalStore

SET = "20261203T010000Z-0a1b2c3d"


def repo_with_reference(tmp_path, body: bytes) -> Repository:
    store = ArtifactStore(LocalStore(tmp_path / "store"))
    repo = Repository(store, "stamp1", cache_dir=tmp_path / "cache")
    repo.meta.put(artifact_key("stamp1", SET, "fileshare", "snapshot.json"), lambda: io.BytesIO(body))
    return repo


def test_a_genuine_reference_names_its_snapshot(tmp_path):
    repo = repo_with_reference(tmp_path, json.dumps({"snapshot_id": SET}).encode())
    assert snapshot_of_set(repo, SET) == SET


@pytest.mark.parametrize("body", [
    json.dumps({"snapshot_id": "../../stamp2/fileshare/snapshots/20261203T010000Z-0a1b2c3d"}).encode(),
    json.dumps({"snapshot_id": "a/b"}).encode(),
    json.dumps({"snapshot_id": 7}).encode(),
    json.dumps(["not", "a", "reference"]).encode(),
    b"not json",
])
def test_a_forged_reference_is_refused_with_the_fix(tmp_path, body):
    repo = repo_with_reference(tmp_path, body)
    with pytest.raises(PermanentError) as caught:
        snapshot_of_set(repo, SET)
    assert "another backup set" in caught.value.hint


@pytest.mark.parametrize("snapshot", ["../x", "..", "/etc/passwd", "a/../../b", "", "x" * 200])
def test_a_snapshot_id_never_names_an_object_or_cache_file_outside_the_repository(tmp_path, snapshot):
    repo = repo_with_reference(tmp_path, b"{}")
    for call in (repo.manifest_key, repo.summary_key, repo.manifest, repo.cached_manifest):
        with pytest.raises(PermanentError, match="invalid snapshot id"):
            call(snapshot)
