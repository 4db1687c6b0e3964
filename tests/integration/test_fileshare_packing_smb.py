"""Reader processes that pack and upload themselves (``workers.fileshare.packing``): a real Samba share, a real S3
server (moto) with the store opened from settings, as the worker opens it."""
from __future__ import annotations

import filecmp
import os
import random
import shutil
import signal
import uuid
from pathlib import Path

import pytest

from tests.unit.certs import make_cert, write_signing
from workers.artifacts.service import ArtifactStore
from workers.fileshare.handler import commit
from workers.fileshare.localtree import LocalTree
from workers.fileshare.opener import open_tree
from workers.fileshare.restore import Restorer
from workers.fileshare.settings import FileshareSettings
from workers.fileshare.sync import Sync
from workers.repository.packer import Packer
from workers.repository.repo import Repository
from workers.runtime.errors import TransientError
from workers.storage.codec import KeyRing
from workers.storage.settings import EncryptionSettings, StoreSettings

pytestmark = pytest.mark.integration
MiB = 1 << 20


def share_dir(smb) -> tuple[Path, str]:
    name = f"pk-{uuid.uuid4().hex[:8]}"
    (smb.path / name).mkdir()
    return smb.path / name, smb.unc(name)


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def settings(smb, unc: str, tmp_path: Path, **kw) -> FileshareSettings:
    return FileshareSettings(source=unc, username=smb.username, password=smb.password, port=smb.port,
                             cache_dir=tmp_path / "cache", pack_size=4 * MiB, chunk_avg=256 * 1024, processes=2,
                             reader_packing=True, wait=0, **kw)


def store(s3, tmp_path: Path) -> ArtifactStore:
    """An encrypted, signing S3 store built from settings (so reader processes can open it again)."""
    make_cert("packing-it").write(tmp_path)
    signing, verify = write_signing(tmp_path)
    return ArtifactStore.from_settings(
        StoreSettings(kind="s3", s3_endpoint=s3.endpoint, s3_access_key=s3.access_key, s3_secret_key=s3.secret_key,
                      s3_bucket=f"pk-{uuid.uuid4().hex[:8]}", s3_region=s3.region, s3_secure=False),
        EncryptionSettings(certificate=tmp_path / "cert.pem", signing_key=signing, verify_keys=(verify,)))


def sync(smb, unc: str, tmp_path: Path, artifacts: ArtifactStore, sid: str, progress=lambda kind, n: None):
    repo = Repository(artifacts, "stamp", cache_dir=tmp_path / "cache")
    tree = open_tree(unc, username=smb.username, password=smb.password, port=smb.port)
    try:
        result = Sync(settings(smb, unc, tmp_path), repo, tree, progress=progress).run(sid, "stamp", sid, None)
    finally:
        tree.close()
    commit(repo, result)
    return result


def restored_equal(artifacts: ArtifactStore, sid: str, src: Path, tmp_path: Path) -> None:
    keys = KeyRing.from_files(keys=[tmp_path / "key.pem"])
    repo = Repository(artifacts, "stamp")
    out = tmp_path / f"restored-{sid}"
    report = Restorer(repo, LocalTree(str(out), create=True), keys=keys).run(repo.manifest(sid, keys, cached=False))
    assert report.exact
    for source in src.rglob("*"):
        if source.is_file():
            assert filecmp.cmp(source, out / source.relative_to(src), shallow=False), source


def test_reader_processes_pack_upload_and_store_each_blob_once(smb_server, s3_server, tmp_path, monkeypatch):
    # Given a share whose large and small files repeat content across files (read by two processes at once)
    src, unc = share_dir(smb_server)
    rnd = random.Random(7)
    same, small = rnd.randbytes(3 * MiB), [rnd.randbytes(rnd.randint(1000, 60000)) for _ in range(8)]
    for i in range(6):
        write(src / f"copies/same{i}.bin", same)
        write(src / f"own/big{i}.bin", rnd.randbytes(2 * MiB + i))
    for i in range(40):
        write(src / f"small/d{i % 4}/f{i}.txt", small[i % 8])
    shutil.chown(src, smb_server.username)
    artifacts = store(s3_server, tmp_path)
    # When it is synced with packing reader processes (the worker process itself never packs content)
    monkeypatch.setattr(Packer, "add", lambda *a: pytest.fail("the worker process packed content"))
    result = sync(smb_server, unc, tmp_path, artifacts, "s1")
    # Then every distinct blob is indexed once, and the packs hold exactly those bytes (none stored twice)
    repo = Repository(artifacts, "stamp")
    index = repo.load_index()
    referenced = {b for e in repo.manifest("s1", KeyRing.from_files(keys=[tmp_path / "key.pem"])).files()
                  for b in e.blobs}
    assert referenced == set(index.blobs)
    unique = len(same) + sum(2 * MiB + i for i in range(6)) + sum(map(len, small))
    assert result.stats.new_bytes == sum(index.place(b).length for b in index.blobs) == unique
    packs = {index.place(b).pack for b in index.blobs}
    records = [artifacts.record(repo.pack_key(p)) for p in packs]       # signature checked (verify keys set)
    assert sum(r.plaintext_size for r in records) == unique and all(r.encrypted for r in records)
    assert result.stats.packs == len(packs) and result.stats.files == 52
    # And the snapshot restores byte for byte
    restored_equal(artifacts, "s1", src, tmp_path)


def test_a_killed_reader_process_fails_the_sync_and_what_was_stored_stays_indexed(smb_server, s3_server,
                                                                                   tmp_path):
    # Given large files to sync with two packing reader processes
    src, unc = share_dir(smb_server)
    for i in range(12):
        write(src / f"big{i:02d}.bin", os.urandom(3 * MiB))
    shutil.chown(src, smb_server.username)
    artifacts = store(s3_server, tmp_path)
    killed: list[int] = []

    def kill_a_reader(kind: str, n: int) -> None:
        import multiprocessing
        if kind == "uploaded" and not killed:              # the first pack stored and indexed-to-be
            victim = multiprocessing.active_children()[0]
            killed.append(victim.pid)
            os.kill(victim.pid, signal.SIGKILL)
    # When a reader process is killed once the first pack is stored
    with pytest.raises(TransientError, match="reader process died"):
        sync(smb_server, unc, tmp_path, artifacts, "s1", progress=kill_a_reader)
    # Then what was reported stored before is indexed (committed), and the retry completes and restores exactly
    indexed = set(Repository(artifacts, "stamp").load_index().blobs)
    assert killed and indexed
    result = sync(smb_server, unc, tmp_path, artifacts, "s1")
    assert result.stats.files == 12 and result.stats.new_bytes <= 36 * MiB - sum(
        Repository(artifacts, "stamp").load_index().place(b).length for b in indexed)
    restored_equal(artifacts, "s1", src, tmp_path)
