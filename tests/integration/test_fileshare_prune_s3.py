"""Forget + prune of an encrypted file-share repository on a real S3 server (moto over HTTP): what stays
restores byte for byte, what goes is gone from the bucket, a dry run changes nothing, an interrupted prune
leaves a restorable repository that the next prune finishes, and racing exclusive locks never both win."""
from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest

from tests.unit.certs import make_cert
from tests.unit.test_fileshare_prune import assert_restores, history
from tests.unit.test_fileshare_trees import picture
from workers.artifacts.service import ArtifactStore
from workers.cli import main
from workers.repository.forget import Policy, forget
from workers.repository.lock import RepoLock, RepositoryLocked, read_locks
from workers.repository.prune import Pruner
from workers.repository.repo import Repository
from workers.storage.codec import KeyRing, load_certificate
from workers.storage.s3 import S3Store

pytestmark = pytest.mark.integration


@pytest.fixture
def s3(s3_server, tmp_path):
    """An encrypted repository in a fresh bucket, and the key ring that opens it."""
    cert, key = make_cert("prune-s3").write(tmp_path)
    bucket = f"prune-{uuid.uuid4().hex[:8]}"
    backend = S3Store(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, bucket, secure=False)
    store = ArtifactStore(backend, certificate=load_certificate(cert))
    yield store, KeyRing.from_files(keys=[key]), bucket, key
    s3_server.reset()


def objects(store: ArtifactStore) -> dict[str, tuple]:
    return {i.key: (i.size, i.etag) for i in store.backend.list("stamp1/")}


def test_forget_and_prune_on_s3_keep_what_stays_restorable_and_remove_the_rest(s3, tmp_path):
    store, keys, _, _ = s3
    # Given four encrypted snapshots of a changing tree in the bucket
    copies = history(tmp_path, store)
    forget(Repository(store, "stamp1"), Policy(keep_last=2))
    # When a dry run prunes / Then not one object changes
    before = objects(store)
    dry = Pruner(Repository(store, "stamp1"), keys).run(dry_run=True)
    assert objects(store) == before and dry.packs_deleted
    # When it prunes for real
    report = Pruner(Repository(store, "stamp1"), keys).run()
    after = objects(store)
    # Then the doomed packs, their records and the old index objects are gone from the bucket, nothing else
    gone = set(before) - set(after)
    for pack in report.packs_deleted:
        assert {f"stamp1/fileshare/packs/{pack}", f"stamp1/fileshare/packs/{pack}.record.json"} <= gone
    assert {k for k in gone if "/index/" in k} and not {k for k in gone if "/snapshots/" in k}
    assert set(after) - set(before) == {f"stamp1/fileshare/index/{report.new_index}"}
    assert report.bytes_freed == dry.bytes_freed > 300_000
    # And the remaining snapshots restore byte for byte from S3
    assert_restores(store, tmp_path, copies, ["s3", "s4"], "s3", keys)


def test_a_prune_interrupted_on_s3_leaves_a_restorable_repository_and_the_next_one_finishes(s3, tmp_path):
    store, keys, _, _ = s3
    copies = history(tmp_path, store, count=3)
    forget(Repository(store, "stamp1"), Policy(keep_last=1))
    backend = store.backend
    real_delete, deleted = backend.delete, []

    def delete_one_pack_then_fail(key: str) -> None:
        if "/packs/" in key and len(deleted) >= 1:
            raise ConnectionError("S3 went away while deleting packs")
        deleted.append(key)
        real_delete(key)

    # When the prune dies after its index switch, while deleting the packs
    backend.delete = delete_one_pack_then_fail
    with pytest.raises(ConnectionError):
        Pruner(Repository(store, "stamp1"), keys).run()
    backend.delete = real_delete
    # Then the remaining snapshot restores, and the next prune deletes what is left
    assert_restores(store, tmp_path, copies, ["s3"], "interrupted", keys)
    second = Pruner(Repository(store, "stamp1"), keys, unindexed_grace=timedelta(0)).run()
    assert second.unindexed_deleted and second.missing_blobs == 0
    packs = {i.key.rsplit("/", 1)[1] for i in backend.list("stamp1/fileshare/packs/")}
    indexed = set(Repository(store, "stamp1").load_index().packs())
    assert packs == indexed | {f"{p}.record.json" for p in indexed}
    assert_restores(store, tmp_path, copies, ["s3"], "finished", keys)


def test_racing_exclusive_locks_on_s3_never_both_win(s3):
    store, _, _, _ = s3
    for _ in range(5):
        won, start, tried = [], threading.Barrier(2), threading.Barrier(2)

        def take(name: str) -> None:
            start.wait()
            lock: RepoLock | None = RepoLock(store.backend, "stamp1", "prune", holder=name, exclusive=True)
            try:
                lock.acquire()
                won.append(name)
            except RepositoryLocked:
                lock = None
            tried.wait()                        # both have tried before either lets go
            if lock is not None:
                lock.release()

        threads = [threading.Thread(target=take, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(won) <= 1 and read_locks(store.backend, "stamp1") == []


def test_the_cli_forgets_and_prunes_an_s3_repository(s3, s3_server, tmp_path, monkeypatch, capsys):
    store, _, bucket, key = s3
    copies = history(tmp_path, store, count=3)
    for name, value in {"KIND": "s3", "S3_ENDPOINT": s3_server.endpoint, "S3_ACCESS_KEY": s3_server.access_key,
                        "S3_SECRET_KEY": s3_server.secret_key, "S3_BUCKET": bucket, "S3_SECURE": "false"}.items():
        monkeypatch.setenv(f"APPSVC_DR_STORE__{name}", value)
    monkeypatch.setenv("APPSVC_DR_FILESHARE__CACHE_DIR", str(tmp_path / "cli-cache"))
    # When the operator forgets down to one snapshot and prunes, with the key
    assert main(["snapshots", "forget", "--stamp", "stamp1", "--keep-last", "1", "--prune", "--key", str(key)]) == 0
    out = capsys.readouterr().out
    # Then it reports what it kept, forgot and freed, without secrets; the kept snapshot restores
    assert "keep   s3" in out and "forget s2" in out and "forget s1" in out and "freed " in out
    assert s3_server.secret_key not in out and "PRIVATE KEY" not in out
    assert main(["restore", "fileshare", "--stamp", "stamp1", "--snapshot", "s3", "--target", str(tmp_path / "r"),
                 "--key", str(key)]) == 0
    assert picture(tmp_path / "r") == picture(copies["s3"])
    # When the operator asks to repack every partly used pack, first without the certificate configured
    capsys.readouterr()
    before = objects(store)
    assert main(["snapshots", "prune", "--stamp", "stamp1", "--repack-below", "100", "--key", str(key)]) == 2
    # Then it refuses before changing anything (the packs would be stored again unencrypted), saying what to do
    err = capsys.readouterr().err
    assert "unencrypted" in err and "APPSVC_DR_ENCRYPTION__CERTIFICATE" in err and objects(store) == before
    # When the certificate is configured too
    monkeypatch.setenv("APPSVC_DR_ENCRYPTION__CERTIFICATE", str(tmp_path / "cert.pem"))
    assert main(["snapshots", "prune", "--stamp", "stamp1", "--repack-below", "100", "--key", str(key)]) == 0
    # Then the partly used packs are rewritten and the snapshot still restores, byte for byte
    assert "repack: rewrite" in capsys.readouterr().out
    assert main(["restore", "fileshare", "--stamp", "stamp1", "--snapshot", "s3", "--target", str(tmp_path / "r2"),
                 "--key", str(key)]) == 0
    assert picture(tmp_path / "r2") == picture(copies["s3"])
