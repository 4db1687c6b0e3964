"""File-share snapshots from a real Samba share into a real S3 server, and restores back onto the share."""
from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from pathlib import Path

import pytest
import smbclient

from contracts import BackupDue, BackupDuePayload
from tests.fixtures import started
from tests.fixtures.smbd import _run, _stop_by_pidfile, _wait_listening, smbd_server
from tests.unit.certs import make_cert
from tests.unit.forge import plan_set
from tests.unit.test_fileshare_trees import MiB, change_tree, copy_tree, make_tree, picture, write
from workers.artifacts.service import ArtifactStore
from workers.config import load_settings
from workers.fileshare.chunker import Chunker
from workers.fileshare.handler import FileshareHandler, commit
from workers.fileshare.localtree import LocalTree
from workers.fileshare.opener import open_tree
from workers.fileshare.restore import Restorer
from workers.fileshare.settings import FileshareSettings
from workers.fileshare.sync import Sync
from workers.fileshare.tree import SourceDenied, SourceUnavailable
from workers.repository.repo import Repository
from workers.runtime.worker import JobContext
from workers.storage.codec import KeyRing, load_certificate
from workers.storage.local import LocalStore
from workers.storage.s3 import S3Store

pytestmark = pytest.mark.integration
CTX = JobContext("fileshare", "fileshare:1", 0, logging.LoggerAdapter(logging.getLogger("test"), {}))


def share_dir(smb, name: str | None = None) -> tuple[Path, str]:
    """A fresh directory on the share, owned by the share's user: (local path, UNC path)."""
    name = name or f"fs-{uuid.uuid4().hex[:8]}"
    path = smb.path / name
    path.mkdir()
    shutil.chown(path, smb.username)
    return path, smb.unc(name)


def fileshare(smb, unc: str, tmp_path, **kw) -> FileshareSettings:
    return FileshareSettings(source=unc, username=smb.username, password=smb.password, port=smb.port,
                             cache_dir=tmp_path / "cache", **kw)


def tree(smb, unc: str, password: str | None = None):
    return open_tree(unc, username=smb.username, password=password or smb.password, port=smb.port)


@pytest.fixture
def keys(tmp_path):
    make_cert("fileshare-it").write(tmp_path)
    return load_certificate(tmp_path / "cert.pem"), KeyRing.from_files(keys=[tmp_path / "key.pem"])


def test_share_snapshots_to_s3_are_incremental_and_restore_byte_and_mtime_exact(smb_server, s3_server, tmp_path,
                                                                                  keys):
    # Given a generated tree on the Samba share and an encrypted S3 repository
    src, unc = share_dir(smb_server)
    make_tree(src, big=5 * MiB, owner=smb_server.username)
    then = copy_tree(src, tmp_path / "t0")
    s3 = S3Store(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, f"fs-{uuid.uuid4().hex[:8]}",
                 secure=False)
    store = ArtifactStore(s3, certificate=keys[0])
    settings = fileshare(smb_server, unc, tmp_path, pack_size=4 * MiB)
    # When it is synced, changed (add, modify, delete, rename) and synced again
    results = []
    for sid in ("s1", "s2"):
        repo = Repository(store, "stamp1", cache_dir=tmp_path / "cache")
        result = Sync(settings, repo, tree(smb_server, unc)).run(sid, "stamp1", sid, None)
        commit(repo, result)
        results.append(result.stats)
        if sid == "s1":
            new_content = change_tree(src, owner=smb_server.username)
            now = copy_tree(src, tmp_path / "t1")
    # Then the first snapshot stored everything once, the second only the new content (and one chunk)
    first, second = results
    dirs = sum(1 for v in picture(then).values() if v[0] == "dir")
    assert first.files == 47 and first.dirs == dirs and first.new_bytes == first.bytes - 5500
    assert second.files_unchanged == 44 and second.files_moved == 1 and second.files_removed == 2
    assert new_content <= second.new_bytes <= new_content + Chunker().max
    assert second.stored_bytes < new_content + Chunker().max + 64 * 1024
    # And each snapshot, restored to a fresh directory of the share, equals the tree of its time
    repo = Repository(store, "stamp1")
    for sid, expected in (("s1", then), ("s2", now)):
        target, target_unc = share_dir(smb_server)
        report = Restorer(repo, tree(smb_server, target_unc), keys=keys[1]).run(repo.manifest(sid, keys[1]))
        assert report.files_restored == len([e for e in picture(expected).values() if e[0] == "file"])
        assert picture(target) == picture(expected)
    # And a second restore onto the same target skips every file as identical
    again = Restorer(repo, tree(smb_server, target_unc), keys=keys[1]).run(repo.manifest("s2", keys[1]))
    assert again.files_restored == 0 and again.files_identical == 47


def test_a_file_held_with_a_deny_share_lock_is_retried_then_skipped_with_a_warning(smb_server, tmp_path):
    # Given a tree with one file held open by a second SMB session that denies sharing
    src, unc = share_dir(smb_server)
    make_tree(src, big=MiB, owner=smb_server.username)
    locked = "site/wwwroot/index.html"
    holder = smbclient.open_file(smb_server.unc(src.name, *locked.split("/")), mode="rb", share_access=None,
                                 username=smb_server.username, password=smb_server.password, port=smb_server.port,
                                 connection_cache={})
    settings = load_settings(store={"kind": "local", "local_path": str(tmp_path / "store")}, fileshare={
        "source": unc, "username": smb_server.username, "password": smb_server.password, "port": smb_server.port,
        "cache_dir": str(tmp_path / "cache"), "retries": 2, "wait": 0.3})
    event = BackupDue(source="test", stamp="stamp1", correlation_id="set-lock",
                      payload=BackupDuePayload(backup_set_id="set-lock", components=("fileshare",)))
    plan_set(LocalStore(tmp_path / "store"), "set-lock", "fileshare")                  # as the catalog does
    try:
        # When the backup runs
        started_at = time.monotonic()
        store = ArtifactStore(LocalStore(tmp_path / "store"))
        handler = FileshareHandler(settings.fileshare, settings.retention, store)
        synced, stored, warning = handler.backup_due(event, CTX)
        took = time.monotonic() - started_at
    finally:
        holder.close()
    # Then the file was retried (2 × 0.3 s), skipped with the reason, and everything else is in the snapshot
    p = synced.payload
    assert took >= 0.6 and p.partial and p.skipped_count == 1 and p.files == 46
    assert p.skipped[0].path == locked and "sharing violation" in p.skipped[0].reason
    # And a warning notification follows
    assert warning.payload.severity == "warning" and locked in warning.payload.message
    assert stored.payload.key == "stamp1/set-lock/fileshare/snapshot.json"


def test_bad_credentials_are_a_permanent_error_with_a_hint(smb_server, tmp_path):
    # Given a wrong password / When a sync starts / Then it fails permanently, naming the settings to fix
    _, unc = share_dir(smb_server)
    repo = Repository(ArtifactStore(LocalStore(tmp_path / "store")), "stamp1")
    with pytest.raises(SourceDenied) as failure:
        Sync(fileshare(smb_server, unc, tmp_path), repo, tree(smb_server, unc, "wrong-password")).run(
            "s1", "stamp1", "s1", None)
    assert "APPSVC_DR_FILESHARE__PASSWORD" in failure.value.hint


def test_smb_server_stopped_mid_sync_is_transient_and_the_retry_resumes(tmp_path):
    # Given our own smbd with 1,500 small files, and 1 MiB packs in a local store
    with started("Samba smbd", smbd_server()) as smb:
        src, unc = share_dir(smb)
        for i in range(1500):
            write(src, f"d{i % 15}/f{i}.bin", i.to_bytes(4, "big") * 4096, owner=smb.username)
        for d in src.iterdir():
            shutil.chown(d, smb.username)
        settings = fileshare(smb, unc, tmp_path, pack_size=MiB, chunk_avg=256 * 1024, transfers=4)
        store = ArtifactStore(LocalStore(tmp_path / "store"))
        index = tmp_path / "store/stamp1/fileshare/index"

        def stop_after_first_pack() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (index.exists() and any(index.iterdir())):
                time.sleep(0.01)
            _stop_by_pidfile(smb.conf.parent / "pid")

        # When the server stops once the first pack is stored
        stopper = threading.Thread(target=stop_after_first_pack)
        stopper.start()
        with pytest.raises(SourceUnavailable):
            Sync(settings, Repository(store, "stamp1"), tree(smb, unc)).run("s1", "stamp1", "s1", None)
        stopper.join()
        # Then the failure is transient; when the server is back the retry completes from the stored packs
        stored_before = len(Repository(store, "stamp1").load_index())
        assert stored_before >= 1
        _run("smbd", "-D", "-s", str(smb.conf))
        _wait_listening(smb.port, smb.conf.parent / "pid", smb.conf.parent / "log" / "smbd.log")
        result = Sync(settings, Repository(store, "stamp1"), tree(smb, unc)).run("s1", "stamp1", "s1", None)
        assert result.stats.files == 1500 and not result.manifest.partial
        assert result.stats.new_bytes == (1500 - stored_before) * 16384    # nothing stored twice
        commit(Repository(store, "stamp1"), result)
        repo = Repository(store, "stamp1")
        Restorer(repo, LocalTree(tmp_path / "r", create=True)).run(repo.manifest("s1"))
        assert picture(tmp_path / "r") == picture(src)
