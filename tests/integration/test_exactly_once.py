"""Exactly one dump and one upload per (backup set, database), on the real RabbitMQ and PostgreSQL: a backup-due
published twice, one redelivered around a broker restart, and a job whose holder died. The real PostgreSQL engine
is wrapped only to count its backups (and to slow them, so deliveries overlap); uploads are counted by the bytes
the upload worker reports and by the artifact-stored events that say something new was stored."""
from __future__ import annotations

import json
import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from contracts import BackupDue, BackupDuePayload
from tests.fixtures import started
from tests.fixtures.postgres import PG_HOST, PG_PORT, PG_USER, fill_sample, postgres_available, scratch_database
from tests.fixtures.rabbit import (dead_letters, queue_info, running, settings_for, spawn_worker, tap, vhost,
                                   wait_for)
from workers.app import App
from workers.artifacts.jobs import LEASE_SUFFIX, JobKey
from workers.dbbackup.handler import SPEC, DbBackupHandler, artifact_name
from workers.dbbackup.once import JOBS_DIR, job_prefix
from workers.engines.factory import build_engine
from workers.middleware.base import Middleware
from workers.runtime.publisher import Publisher
from workers.runtime.topology import Topology

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


def queue_consumers(settings, worker: str) -> int:
    queue = Topology.from_settings(settings.broker, settings.retry).queues(worker).main
    try:
        return int(queue_info(settings.broker.vhost, queue).get("consumers") or 0)
    except Exception:  # noqa: BLE001 - 404 until the worker declared it
        return 0


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
    log = connections.db_backup
    assert log[0] and False in log and log.index(True, log.index(False)) > 0
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


def test_a_worker_killed_mid_dump_leaves_a_lease_the_redelivered_request_takes_over(rabbit_vhost, tmp_path, trace_dir,
                                                                                    databases):
    # Given a db-backup worker process holding a dump's lease (its backup waits 60 s)
    settings = make_settings(rabbit_vhost, tmp_path, databases[:1])
    set_id = "20261203T060000Z-0dce0006"
    job = JobKey(STAMP, set_id, "databases", artifact_name("postgres", databases[0]))
    first = spawn_worker("tests.integration.sample_workers:slow_db_backup", settings, APPSVC_DR_TEST_JOB_SECONDS="60")
    second = None
    try:
        wait_for(lambda: queue_consumers(settings, "db-backup"), 30, what="first worker consuming")
        with Publisher(settings.broker) as pub:
            pub.publish(backup_due(set_id))
        leases = lambda: list((tmp_path / "staging" / JOBS_DIR).glob(f"*{LEASE_SUFFIX}"))  # noqa: E731
        wait_for(lambda: leases() and list(trace_dir.glob("*.started")), 30, what="dump under way")
        # When the process is killed (SIGKILL: no clean-up) and another worker process starts
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert len(leases()) == 1
        second = spawn_worker("tests.integration.sample_workers:slow_db_backup", settings)
        # Then the redelivered request takes the job over at once (its holder's process is gone) and dumps
        done = tmp_path / "staging" / f"{job_prefix(job)}done.json"
        wait_for(done.exists, 60, what="the job done by the second worker")
        started = sorted(int(p.name.split(".")[-2]) for p in trace_dir.glob("*.started"))
        assert started == sorted([first.pid, second.pid])
        # the done record is written before the lease is released: wait for the release, not for a race
        wait_for(lambda: leases() == [], 30, what="the second worker's lease released")
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
            if proc is not None:
                proc.communicate(timeout=30)


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
