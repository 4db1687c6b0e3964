"""Database path end to end on real servers: PostgreSQL → dump staged on Samba → upload to S3 (moto over HTTP)
→ catalog → `appsvc-dr restore database` into a fresh database, compared table by table."""
from __future__ import annotations

import contextlib
import shutil
import threading
import uuid

import pytest
from pydantic import SecretStr

from contracts import BackupDue, BackupDuePayload
from tests.fixtures import started
from tests.fixtures.postgres import (PG_HOST, PG_PORT, PG_USER, connect, drop_database, fill_sample,
                                     postgres_available, scratch_database, table_fingerprints, unique_name)
from tests.fixtures.rabbit import dead_letters, run_cli, running, settings_for, tap, wait_for
from tests.fixtures.webhook_server import webhook_server  # noqa: F401 - session fixture
from tests.unit.certs import make_cert, signing_settings
from workers.app import App
from workers.runtime.publisher import Publisher

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def postgres():
    with started("PostgreSQL", postgres_available()):
        yield


@pytest.fixture
def env(rabbit_vhost, tmp_path, smb_server, s3_server):
    make_cert("db-test").write(tmp_path)
    staging = smb_server.path / f"staging-{rabbit_vhost}"
    staging.mkdir()
    shutil.chown(staging, smb_server.username)

    def make(database: str, **extra):
        return settings_for(
            rabbit_vhost,
            store={"kind": "s3", "s3_endpoint": s3_server.endpoint, "s3_access_key": s3_server.access_key,
                   "s3_secret_key": s3_server.secret_key, "s3_bucket": f"db-{uuid.uuid4().hex[:10]}",
                   "s3_region": s3_server.region, "s3_secure": False},
            encryption={"certificate": str(tmp_path / "cert.pem"), **signing_settings(tmp_path)},
            staging={"smb_username": smb_server.username, "smb_password": smb_server.password,
                     "smb_port": smb_server.port, "database_dir": smb_server.unc(staging.name)},
            database={"engine": "postgres", "server": PG_HOST, "port": PG_PORT, "username": PG_USER,
                      "databases": [database]}, **extra)
    return make, tmp_path, staging



def backup_due(set_id: str) -> BackupDue:
    return BackupDue(source="test", stamp="stamp1", correlation_id=set_id,
                     payload=BackupDuePayload(backup_set_id=set_id, components=("databases",)))


def test_database_is_dumped_staged_on_smb_uploaded_and_restored_identically(env):
    make, tmp, staging = env
    with scratch_database() as source:
        # Given a database with several tables and some MB of data
        fill_sample(source, rows=20000)
        settings = make(source)
        seen: list = []
        app = App(settings, ["db-backup", "upload", "catalog", tap(seen, "backup-set-completed",
                                                                   "database-backed-up")])
        with running(app):
            # When a backup is due
            with Publisher(settings.broker) as pub:
                pub.publish(backup_due("20261122T010000Z-dbtest01"))
            # Then the set completes with the database in it
            wait_for(lambda: any(e.type == "backup-set-completed" for e in seen), 90, what="set completed")
        backed = next(e for e in seen if e.type == "database-backed-up").payload
        assert backed.engine == "postgres" and backed.size > 1_000_000 and backed.database == source
        # the staged dump was removed after the upload; what is left is the job's record (workers/dbbackup/once.py)
        assert [p.name.rpartition("+")[2] for p in staging.rglob("*") if p.is_file()] == ["done.json"]
        # When the operator restores it into a fresh database
        target = unique_name("dr_restored")
        try:
            out = run_cli(settings, "restore", "database", "--stamp", "stamp1", "--set", "20261122T010000Z-dbtest01",
                          "--database", source, "--target-database", target, "--key", str(tmp / "key.pem"))
            assert out.returncode == 0, out.stderr
            assert "ONLINE" in out.stdout
            assert "while it downloaded" in out.stdout         # the upload worker signed the dump's head hash
            # Then every table has the same rows
            assert table_fingerprints(target) == table_fingerprints(source)
            assert len(table_fingerprints(source)) >= 3
        finally:
            drop_database(target)


def test_missing_database_is_a_permanent_failure_with_a_hint_and_a_notification(env, webhook_server):  # noqa: F811
    make, tmp, staging = env
    webhook_server.reset()
    settings = make("no_such_database_here")
    settings = settings.model_copy(update={"notify": settings.notify.model_copy(
        update={"webhook_urls": [SecretStr(webhook_server.url("/db"))]})})
    app = App(settings, ["db-backup", "notifier"])
    with running(app):
        with Publisher(settings.broker) as pub:
            pub.publish(backup_due("20261122T010000Z-dbtest02"))
        letters = wait_for(lambda: dead_letters(settings, "db-backup"), 30, what="dead letter")
        wait_for(lambda: webhook_server.received("/db"), 30, what="notification")
    assert letters[0].reason == "permanent" and "no_such_database_here" in letters[0].header("x-dr-error")
    assert letters[0].header("x-dr-hint")
    note = webhook_server.received("/db")[0].json
    assert "no_such_database_here" in str(note) and letters[0].header("x-dr-hint")[:40] in str(note)


def test_connection_dropped_mid_dump_is_retried_and_completes(env):
    make, tmp, staging = env
    with scratch_database() as source:
        # Given a database big enough that its dump takes a few seconds
        fill_sample(source, rows=150000)
        settings = make(source)
        seen: list = []
        killed = threading.Event()

        def kill_the_dump() -> None:
            with contextlib.closing(connect()) as admin:
                cursor = admin.cursor()
                for _ in range(1500):
                    rows = cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = ? AND query LIKE "
                                          "'COPY %' AND state = 'active'", source).fetchall()  # pg_dump at work
                    if rows:
                        cursor.execute("SELECT pg_terminate_backend(?)", rows[0][0])
                        killed.set()
                        return
                    threading.Event().wait(0.02)

        app = App(settings, ["db-backup", tap(seen, "artifact-ready", "database-backed-up")])
        with running(app):
            killer = threading.Thread(target=kill_the_dump, daemon=True)
            killer.start()
            with Publisher(settings.broker) as pub:
                pub.publish(backup_due("20261122T010000Z-dbtest03"))
            # When the dump's connection is terminated mid-dump
            assert killed.wait(40), "pg_dump never showed up"
            # Then the job is retried after the backoff and completes
            wait_for(lambda: any(e.type == "database-backed-up" for e in seen), 60, what="retried dump")
        assert app.metrics.retries.labels("db-backup", "database-backup-requested")._value.get() >= 1
        assert dead_letters(settings, "db-backup") == []
