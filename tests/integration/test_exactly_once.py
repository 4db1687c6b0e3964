"""Exactly one dump and one upload per (backup set, database), on the real RabbitMQ and PostgreSQL: a backup-due
published twice, one redelivered around a broker restart, and a job whose holder died. The real PostgreSQL engine
is wrapped only to count its backups (and to slow them, so deliveries overlap); uploads are counted by the bytes
the upload worker reports and by the artifact-stored events that say something new was stored."""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from contracts import ArtifactReady, ArtifactReadyPayload, BackupDue, BackupDuePayload
from tests.fixtures import started
from tests.fixtures.postgres import PG_HOST, PG_PORT, PG_USER, fill_sample, postgres_available, scratch_database
from tests.fixtures.rabbit import dead_letters, running, settings_for, tap, vhost, wait_for
from tests.unit.certs import signing_settings
from tests.unit.forge import configured_store, plan_set
from workers.app import App
from workers.artifacts.jobs import LEASE_SUFFIX, JobKey
from workers.dbbackup.handler import SPEC, DbBackupHandler, artifact_name
from workers.dbbackup.once import JOBS_DIR, job_prefix
from workers.engines.factory import build_engine
from workers.middleware.base import Middleware
from workers.runtime.publisher import Publisher

pytestmark = pytest.mark.integration
STAMP = "stamp1"


@pytest.fixture(scope="module", autouse=True)
def postgres():
    with started("PostgreSQL", postgres_available()):
        yield


class CountingEngine:
    """The real PostgreSQL engine; counts each backup it starts and holds it ``delay`` seconds first (and, with
    ``hold``, until ``hold()`` is true)."""

    def __init__(self, engine, delay: float, hold=None) -> None:
        self.engine, self.delay, self.hold = engine, delay, hold
        self.name, self.server = engine.name, engine.server
        self.started: list[str] = []
        self._lock = threading.Lock()

    def backup(self, database, staging_path, progress=None):
        with self._lock:
            self.started.append(database)
        if self.hold is not None:
            wait_for(self.hold, 90, interval=0.2, what="the test's signal to go on")
        time.sleep(self.delay)
        return self.engine.backup(database, staging_path, progress)


def db_backup_with(engine: CountingEngine):
    def factory(deps):
        return SPEC.bind(DbBackupHandler(deps.settings.database, deps.settings.staging, engine))
    return factory


@pytest.fixture
def databases():
    with scratch_database() as first, scratch_database() as second:
        fill_sample(first, rows=3000)
        fill_sample(second, rows=3000)
        yield [first, second]


def make_settings(vhost_name: str, tmp: Path, databases: list[str], worker: dict | None = None, **broker):
    return settings_for(vhost_name, broker=broker, worker=worker or {},
                        store={"kind": "local", "local_path": str(tmp / "store")},
                        staging={"database_dir": str(tmp / "staging")},
                        database={"engine": "postgres", "server": PG_HOST, "port": PG_PORT, "username": PG_USER,
                                  "databases": databases})


def backup_due(set_id: str) -> BackupDue:
    return BackupDue(source="test", stamp=STAMP, correlation_id=set_id,
                     payload=BackupDuePayload(backup_set_id=set_id, components=("databases",)))


def new_uploads(seen: list) -> list:
    """artifact-stored events of artifacts this run stored (not re-emitted for one already stored)."""
    return [e for e in seen if e.type == "artifact-stored" and not e.payload.deduplicated]


def uploaded_bytes(app: App) -> float:
    return app.metrics.bytes.labels("upload", "uploaded-file")._value.get()


def counted(apps, outcome: str) -> float:
    return sum(a.metrics.consumed.labels("db-backup", "database-backup-requested", outcome)._value.get()
               for a in apps)


def staged_files(tmp: Path) -> list[str]:
    return sorted(p.name for p in (tmp / "staging").rglob("*") if p.is_file() and JOBS_DIR not in p.parts)


def test_a_backup_due_published_twice_dumps_and_uploads_each_database_once(rabbit_vhost, tmp_path, databases):
    # Given two db-backup workers (four job slots), upload and catalog, and dumps that take 3 s
    settings = make_settings(rabbit_vhost, tmp_path, databases)
    engine = CountingEngine(build_engine(settings.database), delay=3)
    seen: list = []
    first = App(settings, [db_backup_with(engine), "upload", "catalog",
                           tap(seen, "artifact-stored", "backup-set-completed")])
    second = App(settings, [db_backup_with(engine)])
    set_id = "20261203T010000Z-0dce0001"
    with running(first), running(second):
        # When the same backup set is requested twice (two backup-due events: fresh ids, fresh fan-outs)
        with Publisher(settings.broker) as pub:
            pub.publish(backup_due(set_id))
            pub.publish(backup_due(set_id))
        wait_for(lambda: any(e.type == "backup-set-completed" for e in seen), 90, what="set completed")
        wait_for(lambda: counted([first, second], "duplicate") + counted([first, second], "ok") >= 4, 30,
                 what="all four requests handled")
    # Then each database was dumped once, and each dump uploaded once
    assert sorted(engine.started) == sorted(databases)
    uploads = new_uploads(seen)
    assert sorted(e.payload.name for e in uploads) == sorted(artifact_name("postgres", d) for d in databases)
    assert uploaded_bytes(first) == sum(e.payload.plaintext_size for e in uploads)
    # And the two requests that came while the dumps ran were acked as duplicates and counted
    assert counted([first, second], "duplicate") == 2
    assert dead_letters(settings, "db-backup") == [] and dead_letters(settings, "upload") == []
    assert staged_files(tmp_path) == []


class ConnectionLog(Middleware):
    def __init__(self) -> None:
        self.db_backup: list[bool] = []

    def on_connection(self, worker: str, connected: bool) -> None:
        if worker == "db-backup":
            self.db_backup.append(connected)


@pytest.fixture
def private_vhost(private_rabbit):
    with vhost(private_rabbit.mgmt_url) as name:
        yield name


def test_a_backup_due_redelivered_around_a_broker_restart_dumps_each_database_once(
        private_rabbit, private_vhost, tmp_path, databases):
    # Given the workers on a broker node of this test run only, and dumps that go on only once the db-backup
    # worker has reconnected after the restart below (and 3 s more, so the redelivered requests find them running
    # on the worker's free job threads)
    settings = make_settings(private_vhost, tmp_path, databases, worker={"concurrency": 4},
                             port=private_rabbit.amqp_port)
    connections = ConnectionLog()
    engine = CountingEngine(build_engine(settings.database), delay=3,
                            hold=lambda: connections.db_backup.count(True) > 1)
    seen: list = []
    app = App(settings, [db_backup_with(engine), "upload", "catalog",
                         tap(seen, "artifact-stored", "backup-set-completed")], middleware=[connections])
    due = backup_due("20261203T020000Z-0dce0002")
    with running(app):
        with Publisher(settings.broker, retry_for=60) as pub:
            pub.publish(due)
        wait_for(lambda: len(engine.started) == 2, 30, what="both dumps running")
        # When the broker restarts mid-dump (the jobs' deliveries go back to the queue) and the backup-due
        # arrives again (the same event, as a redelivery carries it)
        private_rabbit.ctl("stop_app")
        time.sleep(1)
        private_rabbit.ctl("start_app")
        with Publisher(settings.broker, retry_for=60) as pub:
            pub.publish(due)
        # Then the set completes
        wait_for(lambda: any(e.type == "backup-set-completed" for e in seen), 120, what="set completed")
    # The restart did cut the db-backup worker's connection mid-dump, and both requests came again
    assert connections.db_backup[:3] == [True, False, True]
    assert counted([app], "ok") + counted([app], "duplicate") >= 4
    # and a request redelivered while its first delivery still ran waited (retried) instead of dumping again
    assert app.metrics.retries.labels("db-backup", "database-backup-requested")._value.get() >= 1
    # With one dump per database and one upload per artifact
    assert sorted(engine.started) == sorted(databases)
    uploads = new_uploads(seen)
    assert sorted(e.payload.name for e in uploads) == sorted(artifact_name("postgres", d) for d in databases)
    assert uploaded_bytes(app) == sum(e.payload.plaintext_size for e in uploads)
    assert dead_letters(settings, "db-backup") == [] and dead_letters(settings, "upload") == []
    assert staged_files(tmp_path) == []


def test_a_job_whose_holder_died_is_taken_over_by_the_redelivered_request(rabbit_vhost, tmp_path, databases):
    # Given a lease left in the staging directory by a db-backup worker that died mid-dump (expired an hour ago)
    settings = make_settings(rabbit_vhost, tmp_path, databases[:1])
    set_id = "20261203T030000Z-0dce0003"
    job = JobKey(STAMP, set_id, "databases", artifact_name("postgres", databases[0]))
    left = tmp_path / "staging" / f"{job_prefix(job)}dead{LEASE_SUFFIX}"
    left.parent.mkdir(parents=True)
    left.write_text(json.dumps({"format": 1, "job": "db-backup:lost", "holder": "a pod that is gone",
                                "host": "db-backup-7f9c", "pid": 1, "running": True,
                                "expires_at": (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()}))
    engine = CountingEngine(build_engine(settings.database), delay=0)
    seen: list = []
    app = App(settings, [db_backup_with(engine), "upload", "catalog", tap(seen, "backup-set-completed")])
    with running(app):
        # When the request is delivered again
        with Publisher(settings.broker) as pub:
            pub.publish(backup_due(set_id))
        # Then it takes the job over: one dump, and the set completes
        wait_for(lambda: seen, 60, what="set completed")
    assert engine.started == databases[:1]
    assert not left.exists()
    assert json.loads((tmp_path / "staging" / f"{job_prefix(job)}done.json").read_text())["events"]


def test_a_duplicate_upload_request_for_a_stored_artifact_uploads_nothing(rabbit_vhost, tmp_path, databases):
    # Given a set whose database was backed up and uploaded
    settings = make_settings(rabbit_vhost, tmp_path, databases[:1])
    engine = CountingEngine(build_engine(settings.database), delay=0)
    seen: list = []
    app = App(settings, [db_backup_with(engine), "upload", "catalog", tap(seen, "artifact-stored")])
    set_id = "20261203T040000Z-0dce0004"
    with running(app):
        with Publisher(settings.broker) as pub:
            pub.publish(backup_due(set_id))
            wait_for(lambda: seen, 60, what="first upload")
            before = uploaded_bytes(app)
            # When the same backup set is requested again after everything finished
            pub.publish(backup_due(set_id))
            wait_for(lambda: len(seen) == 2, 60, what="re-emitted result")
    # Then nothing is dumped or uploaded again; the stored artifact's result is re-emitted
    assert engine.started == databases[:1] and uploaded_bytes(app) == before
    assert seen[1].payload.deduplicated and seen[1].payload.key == seen[0].payload.key
    assert seen[1].event_id != seen[0].event_id
    assert staged_files(tmp_path) == []


def test_the_same_artifact_ready_twice_at_once_is_uploaded_once_to_s3(rabbit_vhost, tmp_path, s3_server):
    # Given two upload workers on an S3 store (leases in the set, signed) and a 40 MiB staged file
    settings = settings_for(rabbit_vhost, store={
        "kind": "s3", "s3_endpoint": s3_server.endpoint, "s3_access_key": s3_server.access_key,
        "s3_secret_key": s3_server.secret_key, "s3_bucket": f"once-{uuid.uuid4().hex[:10]}",
        "s3_region": s3_server.region, "s3_secure": False},
        encryption=signing_settings(tmp_path), staging={"database_dir": str(tmp_path / "staging")})
    set_id = "20261203T050000Z-0dce0005"
    plan_set(configured_store(settings).backend, set_id, "databases", stamp=STAMP)
    staged = tmp_path / "staging" / "orders.dump"
    staged.parent.mkdir()
    staged.write_bytes(os.urandom(40 * 1024 * 1024))
    ready = [ArtifactReady(source="test", stamp=STAMP, correlation_id=set_id, payload=ArtifactReadyPayload(
        component="databases", name="orders.dump", staged_path=str(staged), size=staged.stat().st_size))
        for _ in range(2)]                                # two events (two producers' requests), one artifact
    seen: list = []
    first, second = App(settings, ["upload", tap(seen, "artifact-stored")]), App(settings, ["upload"])
    with running(first), running(second):
        # When both arrive at once
        with Publisher(settings.broker) as pub:
            for event in ready:
                pub.publish(event)
        wait_for(lambda: seen, 60, what="artifact stored")
        wait_for(lambda: sum(a.metrics.consumed.labels("upload", "artifact-ready", o)._value.get()
                             for a in (first, second) for o in ("ok", "duplicate")) == 2, 30, what="both handled")
    # Then it was uploaded once; the other request was a duplicate (counted), or found it stored
    uploaded = sum(a.metrics.bytes.labels("upload", "uploaded-s3")._value.get() for a in (first, second))
    assert uploaded == staged.stat().st_size
    assert len([e for e in seen if not e.payload.deduplicated]) == 1
    duplicates = sum(a.metrics.consumed.labels("upload", "artifact-ready", "duplicate")._value.get()
                     for a in (first, second))
    assert duplicates + len([e for e in seen if e.payload.deduplicated]) == 1
    assert dead_letters(settings, "upload") == []
    # And no lease is left in the set
    backend = configured_store(settings).backend
    assert [i.key for i in backend.list(f"{STAMP}/{set_id}/jobs/")] == []
