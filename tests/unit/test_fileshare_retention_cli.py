"""`appsvc-dr snapshots forget|prune|unlock` and `retention apply` on an encrypted local repository."""
from __future__ import annotations

import logging
import random
import threading

import pytest

from contracts import BackupDue, BackupDuePayload
from tests.unit.certs import make_cert
from tests.unit.forge import configured_store
from tests.unit.test_fileshare_trees import copy_tree, make_tree, picture, write
from workers.artifacts.sets import Plan, write_marker, write_plan
from workers.cli import main
from workers.config import load_settings
from workers.fileshare.handler import FileshareHandler
from workers.repository.lock import RepoLock, read_locks
from workers.runtime.worker import JobContext

CTX = JobContext("fileshare", "fileshare:1", 0, logging.LoggerAdapter(logging.getLogger("test"), {}))
SETS = ("20261120T010000Z-0000000a", "20261121T010000Z-0000000b", "20261122T010000Z-0000000c")


def due(set_id: str) -> BackupDue:
    return BackupDue(source="t", stamp="stamp1", correlation_id=set_id,
                     payload=BackupDuePayload(backup_set_id=set_id, components=("fileshare",)))


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """Three complete backup sets, each with an encrypted snapshot of a tree where a new file replaced the
    previous snapshot's (1 MiB packs: each snapshot's own file sits in packs of its own)."""
    cert, key = make_cert("retention-cli").write(tmp_path)
    for name, value in {"STORE__LOCAL_PATH": tmp_path / "store", "FILESHARE__SOURCE": tmp_path / "src",
                        "FILESHARE__CACHE_DIR": tmp_path / "cache", "ENCRYPTION__CERTIFICATE": cert,
                        "FILESHARE__PACK_SIZE": 1 << 20, "FILESHARE__CHUNK_AVG": 1 << 18}.items():
        monkeypatch.setenv(f"APPSVC_DR_{name}", str(value))
    settings = load_settings()
    make_tree(tmp_path / "src")
    handler = FileshareHandler(settings.fileshare, settings.retention, configured_store(settings))
    for i, set_id in enumerate(SETS):
        (tmp_path / f"src/unique/gen{i - 1}.bin").unlink(missing_ok=True)
        write(tmp_path / "src", f"unique/gen{i}.bin", random.Random(i).randbytes(300_000))
        backend = handler.store.backend
        write_plan(backend, Plan("stamp1", set_id, ("fileshare",), "schedule", None))  # the catalog plans first
        handler.backup_due(due(set_id), CTX)
        write_marker(backend, "stamp1", set_id, {"completed_at": f"2026-11-2{i}T02:00:00+00:00"})
        copy_tree(tmp_path / "src", tmp_path / f"then-{i}")
    return tmp_path, key, handler


def listed(capsys) -> list[str]:
    capsys.readouterr()
    assert main(["snapshots", "list", "--stamp", "stamp1"]) == 0
    return [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]


def test_forget_dry_run_then_forget_and_prune_with_the_key(repo, capsys):
    tmp_path, key, _ = repo
    # When a dry run forgets down to one snapshot / Then it says what it would do and changes nothing
    assert main(["snapshots", "forget", "--stamp", "stamp1", "--keep-last", "1", "--dry-run", "--prune",
                 "--key", str(key)]) == 0
    out = capsys.readouterr().out
    assert f"would forget {SETS[0]}" in out and f"keep   {SETS[2]}" in out and "nothing was changed" in out
    assert "would delete 1 unused" in out and listed(capsys) == list(SETS)
    would_free = out.split("would free ")[1].split()[0]
    # When it runs for real, with --prune
    assert main(["snapshots", "forget", "--stamp", "stamp1", "--keep-last", "1", "--prune", "--key", str(key)]) == 0
    out = capsys.readouterr().out
    # Then it says what it kept, removed and freed, never printing key material
    assert "forgot 2 snapshot(s)" in out and "freed " in out and "PRIVATE KEY" not in out
    assert out.split("freed ")[1].split()[0] == would_free and int(would_free) > 300_000
    assert listed(capsys) == [SETS[2]]
    # And the remaining snapshot restores byte for byte
    assert main(["restore", "fileshare", "--stamp", "stamp1", "--set", SETS[2], "--target", str(tmp_path / "r"),
                 "--key", str(key)]) == 0
    assert picture(tmp_path / "r") == picture(tmp_path / "then-2")


def test_prune_without_the_key_fails_before_changing_anything_and_says_how_to_fix(repo, capsys):
    tmp_path, _, _ = repo
    assert main(["snapshots", "forget", "--stamp", "stamp1", "--keep-last", "1"]) == 0
    assert "snapshots prune --stamp stamp1 --key" in capsys.readouterr().out
    before = sorted(p.name for p in (tmp_path / "store/stamp1/fileshare/packs").iterdir())
    assert main(["snapshots", "prune", "--stamp", "stamp1"]) == 2
    err = capsys.readouterr().err
    assert "cannot read the manifest of snapshot" in err and "how to fix" in err and "--key" in err
    assert sorted(p.name for p in (tmp_path / "store/stamp1/fileshare/packs").iterdir()) == before
    assert read_locks(configured_store().backend, "stamp1") == []


def test_prune_is_refused_while_a_sync_holds_the_repository_and_unlock_clears_dead_locks(repo, capsys):
    tmp_path, key, handler = repo
    backend = handler.store.backend
    # Given a lock of a sync (its process is on another host: not provably dead)
    lock = RepoLock(backend, "stamp1", "sync", holder="fileshare worker (snapshot X)").acquire()
    lock._stop.set()
    # When prune runs / Then it is refused, naming the holder and how to fix it
    assert main(["snapshots", "prune", "--stamp", "stamp1", "--key", str(key)]) == 2
    err = capsys.readouterr().err
    assert "locked: sync lock of fileshare worker (snapshot X)" in err and "snapshots unlock" in err
    # When unlock runs without --all / Then the live lock stays; with --all it goes
    assert main(["snapshots", "unlock", "--stamp", "stamp1"]) == 0
    assert "removed 0 lock(s); 1 still held" in capsys.readouterr().out
    assert main(["snapshots", "unlock", "--stamp", "stamp1", "--all"]) == 0
    assert "removed the sync lock of fileshare worker (snapshot X)" in capsys.readouterr().out
    assert main(["snapshots", "prune", "--stamp", "stamp1", "--key", str(key)]) == 0


def test_a_sync_running_during_a_prune_attempt_is_safe(repo, capsys):
    # Given a backup whose first pack upload is held up
    tmp_path, key, handler = repo
    backend = handler.store.backend
    real_put, entered, go = backend.put, threading.Event(), threading.Event()

    def slow_put(k, stream, *args, **kwargs):
        if "/packs/" in k and not k.endswith(".json"):
            entered.set()
            go.wait(30)
        return real_put(k, stream, *args, **kwargs)

    backend.put = slow_put
    write(tmp_path / "src", "unique/late.bin", b"late" * 50_000)
    result: list = []
    write_plan(backend, Plan("stamp1", "20261123T010000Z-0000000d", ("fileshare",), "schedule", None))
    worker = threading.Thread(target=lambda: result.append(handler.backup_due(due("20261123T010000Z-0000000d"),
                                                                               CTX)))
    worker.start()
    assert entered.wait(30)
    # When forget + prune run meanwhile / Then forget works and prune is refused (the sync holds its lock)
    assert main(["snapshots", "forget", "--stamp", "stamp1", "--keep-last", "1", "--prune", "--key", str(key)]) == 2
    assert "locked: sync lock of fileshare worker" in capsys.readouterr().err
    # And when the sync finishes, its snapshot is complete and restores, and a prune now goes through
    go.set()
    worker.join(60)
    backend.put = real_put
    assert result and not result[0][0].payload.partial
    assert main(["snapshots", "prune", "--stamp", "stamp1", "--key", str(key)]) == 0
    assert main(["restore", "fileshare", "--stamp", "stamp1", "--snapshot", "20261123T010000Z-0000000d", "--target",
                 str(tmp_path / "r"), "--key", str(key)]) == 0
    assert picture(tmp_path / "r") == picture(tmp_path / "src")


def test_retention_apply_forgets_the_snapshots_of_the_sets_it_deletes(repo, capsys):
    # When retention keeps the newest set
    assert main(["retention", "apply", "--stamp", "stamp1", "--keep-last", "1"]) == 0
    out = capsys.readouterr().out
    # Then the older sets are deleted and their snapshots forgotten (the data waits for a prune)
    assert f"delete {SETS[0]}" in out and f"forget {SETS[0]}" in out and f"forget {SETS[1]}" in out
    assert "snapshots prune" in out and listed(capsys) == [SETS[2]]
