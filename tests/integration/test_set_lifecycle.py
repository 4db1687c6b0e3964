"""The backup-set lifecycle on the real broker with the real catalog (and upload) workers, a local-directory store:

* a set whose fileshare worker is down expires at its (short) deadline with one notification naming what is
  missing, although two catalog replicas check it, and no further event arrives; a late artifact completes it;
* a dead-lettered job fails its set at once;
* the recovery-point gauge is rebuilt from the store when the catalog restarts.
"""
from __future__ import annotations

import io
import logging
import time
import urllib.request
from datetime import datetime, timezone

import pytest

from contracts import ArtifactReady, ArtifactReadyPayload, BackupDue, BackupDuePayload, new_backup_set_id
from tests.fixtures.rabbit import running, settings_for, tap, wait_for
from tests.unit.test_catalog_handler import stored
from workers.app import App
from workers.artifacts.lifecycle import stamp_sets
from workers.artifacts.service import ArtifactStore
from workers.artifacts.sets import read_marker, read_plan
from workers.runtime.publisher import Publisher
from workers.secrets.versions import version_id, version_key
from workers.storage.local import LocalStore

pytestmark = pytest.mark.integration
STAMP = "stamp1"


def due(set_id: str, *components: str) -> BackupDue:
    return BackupDue(source="scheduler", stamp=STAMP, correlation_id=set_id,
                     payload=BackupDuePayload(backup_set_id=set_id, components=components, reason="schedule"))


def metrics(app: App) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{app.status.port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def notices(seen: list, error_class: str) -> list:
    return [e for e in seen if e.type == "job-failed" and e.payload.error_class == error_class]


def state_of(store: ArtifactStore, set_id: str, deadline_for) -> str:
    return next(s.state for s in stamp_sets(store.backend, STAMP, deadline_for) if s.set_id == set_id)


def test_a_set_whose_fileshare_worker_is_down_expires_once_and_a_late_artifact_completes_it(rabbit_vhost, tmp_path,
                                                                                          caplog):
    settings = settings_for(rabbit_vhost, store={"kind": "local", "local_path": str(tmp_path / "store")},
                            retention={"set_deadline": "4s", "set_check_interval": 0.5})
    store = ArtifactStore(LocalStore(tmp_path / "store"), compress=False)
    seen: list = []
    # Given two catalog replicas (both tick) and no fileshare worker at all
    first, second = App(settings, ["catalog", tap(seen, "job-failed", "backup-set-completed")]), App(settings, ["catalog"])
    with running(first), running(second), Publisher(settings.broker) as pub, caplog.at_level(logging.INFO):
        set_id = new_backup_set_id()
        requested = time.monotonic()
        pub.publish(due(set_id, "secrets", "fileshare"))
        wait_for(lambda: read_plan(store.backend, STAMP, set_id), 20, what="the plan")
        # When only the secrets artifact arrives, and then nothing at all
        pub.publish(stored(store, set_id, "secrets", "SystemSecrets.json"))
        [expired] = wait_for(lambda: notices(seen, "BackupSetExpired"), 30, what="the expiry notification")
        expired_after = time.monotonic() - requested
        time.sleep(2.5)     # five more ticks of each replica
        # Then the set expired at its deadline, told once, naming the missing component and the likely cause
        assert len(notices(seen, "BackupSetExpired")) == 1, [e.payload.message for e in seen]
        assert 3.0 <= expired_after <= 12, expired_after
        p = expired.payload
        assert p.severity == "error" and expired.correlation_id == set_id and p.worker == "catalog"
        assert "fileshare ×1" in p.message and "no fileshare artifact arrived at all" in p.message
        assert "fileshare worker is likely down" in p.message and "secrets" not in p.message.split("missing")[1]
        assert "appsvc-dr dlq list fileshare" in p.hint and "appsvc-dr worker fileshare" in p.hint
        assert state_of(store, set_id, settings.retention.deadline_for) == "expired"
        text = metrics(first)
        assert f'appsvc_dr_backup_sets{{stamp="{STAMP}",state="expired"}} 1.0' in text
        # When the fileshare artifact arrives late
        pub.publish(stored(store, set_id, "fileshare", "snapshot.json"))
        completed = wait_for(lambda: [e for e in seen if e.type == "backup-set-completed"], 20, what="completion")
    # Then it completes the expired set, and the log says it was late
    assert completed[0].correlation_id == set_id and read_marker(store.backend, STAMP, set_id)
    assert state_of(store, set_id, settings.retention.deadline_for) == "complete"
    assert any("completed LATE" in r.getMessage() and set_id in r.getMessage() for r in caplog.records)


def test_a_dead_lettered_job_fails_its_set_at_once(rabbit_vhost, tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    settings = settings_for(rabbit_vhost, store={"kind": "local", "local_path": str(tmp_path / "store")},
                            staging={"database_dir": str(staging)})
    store = ArtifactStore(LocalStore(tmp_path / "store"), compress=False)
    (staging / "hosting.bak").write_bytes(b"x" * 100)
    seen: list = []
    app = App(settings, ["upload", "catalog", tap(seen, "job-failed")])
    with running(app), Publisher(settings.broker) as pub:
        # Given a planned set (deadline: the default 6 h)
        set_id = new_backup_set_id()
        pub.publish(due(set_id, "databases"))
        wait_for(lambda: read_plan(store.backend, STAMP, set_id), 20, what="the plan")
        # When its upload job fails for good (the staged dump is shorter than the event says: dead-lettered)
        started = time.monotonic()
        pub.publish(ArtifactReady(source="worker:db-backup", stamp=STAMP, correlation_id=set_id,
                                  payload=ArtifactReadyPayload(component="databases", name="hosting.bak", size=5000,
                                                               staged_path=str(staging / "hosting.bak"))))
        [failed] = wait_for(lambda: notices(seen, "BackupSetFailed"), 30, what="the set-failed notification")
    # Then the set failed at once, hours before its deadline, and the notification says why and how to fix it
    assert time.monotonic() - started < 20
    assert failed.correlation_id == set_id and failed.payload.severity == "error"
    assert f"backup set {STAMP}/{set_id} failed" in failed.payload.message
    assert "upload worker dead-lettered artifact-ready" in failed.payload.message
    assert "has 100 bytes, the event says 5000" in failed.payload.message
    assert "appsvc-dr dlq replay upload" in failed.payload.hint
    assert state_of(store, set_id, settings.retention.deadline_for) == "failed"
    assert len(notices(seen, "BackupSetFailed")) == 1


def test_the_rpo_gauge_survives_a_catalog_restart(rabbit_vhost, tmp_path):
    settings = settings_for(rabbit_vhost, store={"kind": "local", "local_path": str(tmp_path / "store")},
                            retention={"rpo_objective": "2h"})
    store = ArtifactStore(LocalStore(tmp_path / "store"), compress=False)
    seen: list = []
    set_id = new_backup_set_id()
    # Given a stored secrets version and a set the catalog completed
    rotated = datetime(2026, 11, 30, 4, 5, 6, tzinfo=timezone.utc)
    store.put(version_key(STAMP, version_id(rotated, "ab" * 32)), lambda: io.BytesIO(b'{"k": "v"}'))
    with running(App(settings, ["catalog", tap(seen, "backup-set-completed")])) as app, \
            Publisher(settings.broker) as pub:
        pub.publish(due(set_id, "secrets"))
        wait_for(lambda: read_plan(store.backend, STAMP, set_id), 20, what="the plan")
        pub.publish(stored(store, set_id, "secrets", "SystemSecrets.json"))
        wait_for(lambda: seen, 20, what="completion")
        before = metrics(app)
    line = next(x for x in before.splitlines() if x.startswith("appsvc_dr_newest_complete_set_timestamp_seconds{"))
    plan_time = read_plan(store.backend, STAMP, set_id).requested_at
    assert float(line.split()[-1]) == pytest.approx(plan_time.timestamp())
    # When the catalog restarts and no event arrives
    with running(App(settings, ["catalog"])) as restarted:
        after = metrics(restarted)
    # Then the gauge, the set counts and the objective are back from the store
    assert line in after.splitlines()
    assert f'appsvc_dr_backup_sets{{stamp="{STAMP}",state="complete"}} 1.0' in after
    assert f'appsvc_dr_backup_sets{{stamp="{STAMP}",state="failed"}} 0.0' in after
    assert f'appsvc_dr_rpo_objective_seconds{{stamp="{STAMP}"}} 7200.0' in after
    assert "appsvc_dr_set_duration_seconds{" in after
    secrets = f'appsvc_dr_secrets_newest_version_timestamp_seconds{{stamp="{STAMP}"}} '
    assert [float(x[len(secrets):]) for x in after.splitlines() if x.startswith(secrets)] == [rotated.timestamp()]
    assert datetime.now(timezone.utc).timestamp() - float(line.split()[-1]) < 120
