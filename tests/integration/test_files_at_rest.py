"""Files at rest (issue 12, item 5): every plaintext file a worker or a restore writes on local disk is 0600 in a
0700 directory, set explicitly (not left to the umask): the secrets drop copy, a staged dump from a real pg_dump,
the decrypted dump during a restore and its staging directory; and worker processes run with umask 077."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from contracts import DatabaseBackupRequested, DatabaseBackupRequestedPayload
from tests.fixtures import started
from tests.unit.forge import configured_store
from tests.fixtures.postgres import PG_HOST, PG_PORT, PG_USER, fill_sample, postgres_available, scratch_database
from tests.fixtures.rabbit import settings_for, spawn_worker, wait_for
from tests.unit.certs import make_cert
from workers.artifacts.setmanifest import artifact_key
from workers.config import load_settings
from workers.engines.factory import build_engine
from workers.dbbackup.handler import DbBackupHandler
from workers.dbbackup.restore import staged_artifact
from workers.runtime.worker import JobContext
from workers.secrets.drop import copy_to_drop
from workers.storage.codec import KeyRing

pytestmark = pytest.mark.integration


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def loose_umask():
    """A permissive umask (022, the usual default), so only explicit modes can make files private."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_the_secrets_drop_copy_is_owner_only(tmp_path, loose_umask):
    # Given a local drop directory and an exported SystemSecrets.json
    (tmp_path / "drop").mkdir()
    exported = tmp_path / "SystemSecrets.json"
    exported.write_text(json.dumps({"SqlServerPassword": "plaintext"}))
    settings = load_settings(secrets={"drop_path": str(tmp_path / "drop")})
    # When the rotation hook copies it to the drop
    dropped = copy_to_drop(exported, settings.secrets, settings.staging)
    # Then the plaintext copy is 0600
    assert Path(dropped).parent == tmp_path / "drop" and mode(dropped) == 0o600


@pytest.fixture(scope="module")
def database():
    with started("PostgreSQL", postgres_available()), scratch_database() as name:
        fill_sample(name, rows=300)
        yield name


def pg_settings(tmp_path: Path, database: str, staging: str):
    make_cert("at-rest").write(tmp_path)
    return load_settings(store={"kind": "local", "local_path": str(tmp_path / "store")},
                         encryption={"certificate": str(tmp_path / "cert.pem")},
                         staging={"database_dir": staging},
                         database={"engine": "postgres", "server": PG_HOST, "port": PG_PORT, "username": PG_USER,
                                   "databases": [database]})


def ctx() -> JobContext:
    return JobContext("db-backup", "k", 0, logging.LoggerAdapter(logging.getLogger("t"), {}), threading.Event())


def test_a_staged_dump_is_owner_only_in_owner_only_directories(tmp_path, database, loose_umask):
    # Given a staging directory that does not exist yet (two levels to create)
    staging = tmp_path / "var" / "staging"
    settings = pg_settings(tmp_path, database, str(staging))
    job = DatabaseBackupRequested(source="t", stamp="stamp1", correlation_id="set-1",
                                 payload=DatabaseBackupRequestedPayload(database=database))
    # When the db-backup handler dumps the database with the real pg_dump
    handler = DbBackupHandler(settings.database, settings.staging, build_engine(settings.database))
    ready, _ = handler.backup_one(job, ctx())
    # Then the dump is 0600 and the directories it created are 0700
    staged = Path(ready.payload.staged_path)
    assert staged.parent == staging and staged.stat().st_size > 10_000
    assert mode(staged) == 0o600
    assert mode(staging) == 0o700 and mode(staging.parent) == 0o700
    assert sorted(p.name for p in staging.iterdir()) == [".jobs", staged.name]   # no leftover .partial
    jobs = [staging / ".jobs", *(staging / ".jobs").iterdir()]          # the job records and their directory
    assert len(jobs) > 1 and all(mode(p) == (0o700 if p.is_dir() else 0o600) for p in jobs)


@pytest.mark.parametrize("where", ["local", "unc"])
def test_the_decrypted_dump_of_a_restore_is_owner_only_in_an_owner_only_directory(tmp_path, database, loose_umask,
                                                                                  where):
    # Given a database dump stored encrypted in a backup set (local staging, or a share pg_restore cannot read)
    staging = str(tmp_path / "staging") if where == "local" else r"\\fileserver.invalid\staging\dr"
    settings = pg_settings(tmp_path, database, staging)
    engine = build_engine(settings.database)
    dump = tmp_path / "made.dump"
    engine.backup(database, str(dump))
    store = configured_store(settings)
    key = artifact_key("stamp1", "set-1", "databases", f"{database}.dump")
    store.put(key, lambda: open(dump, "rb"), require_encryption=True)
    dump.unlink()
    # When a restore fetches and decrypts it into staging
    keys = KeyRing.from_files(keys=[tmp_path / "key.pem"])
    with staged_artifact(settings.staging, engine, store, keys, stamp="stamp1", set_id="set-1", database=database,
                         label="restore", say=lambda _: None) as path:
        # Then the plaintext is 0600 in a fresh 0700 directory, and pg_restore can read it
        assert mode(path) == 0o600 and mode(os.path.dirname(path)) == 0o700
        assert os.path.dirname(os.path.dirname(path)) == (staging if where == "local" else tempfile.gettempdir())
        engine.verify(path)
        held = os.path.dirname(path)
    # And both are gone afterwards
    assert not os.path.exists(path) and not os.path.exists(held)


def test_a_worker_process_runs_with_umask_077(rabbit_vhost):
    # Given a worker started the way deployments start it (`appsvc-dr worker upload`)
    proc = spawn_worker("upload", settings_for(rabbit_vhost))
    try:
        # When it is running, its umask is 077: nothing it (or pg_dump, or a library) creates is group/world-readable
        def umask() -> str | None:
            with contextlib.suppress(FileNotFoundError):
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("Umask:"):
                        return line.split()[1] if line.split()[1] == "0077" else None
            return None
        assert wait_for(umask, 30, what="worker umask 0077") == "0077"
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:     # still connecting when told to stop: not what this test is about
            proc.kill()
            proc.communicate(timeout=15)
