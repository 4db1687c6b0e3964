"""The file-share worker end to end over real RabbitMQ: backup-due → snapshot of a real Samba share →
fileshare-synced + artifact-stored (and the catalog completes the set); bad credentials → job-failed."""
from __future__ import annotations

import shutil
import uuid

import pytest

from contracts import BackupDue, BackupDuePayload
from tests.fixtures.rabbit import dead_letters, running, settings_for, tap, wait_for
from tests.unit.test_fileshare_trees import make_tree
from workers.app import App
from workers.runtime.publisher import Publisher

pytestmark = pytest.mark.integration
TYPES = ("fileshare-synced", "artifact-stored", "job-failed", "backup-set-completed")



def worker_settings(vhost, tmp_path, smb, password=None):
    src = smb.path / f"fsw-{uuid.uuid4().hex[:8]}"
    src.mkdir()
    shutil.chown(src, smb.username)
    make_tree(src, owner=smb.username)
    return settings_for(vhost, store={"kind": "local", "local_path": str(tmp_path / "store")},
                        fileshare={"source": smb.unc(src.name), "username": smb.username,
                                   "password": password or smb.password, "port": smb.port,
                                   "cache_dir": str(tmp_path / "cache")})


def backup_due(set_id: str) -> BackupDue:
    return BackupDue(source="test", stamp="stamp1", correlation_id=set_id,
                     payload=BackupDuePayload(backup_set_id=set_id, components=("fileshare",)))


def test_backup_due_snapshots_the_share_and_the_set_completes(rabbit_vhost, tmp_path, smb_server):
    # Given the fileshare and catalog workers, a share with content, and a tap on their events
    settings = worker_settings(rabbit_vhost, tmp_path, smb_server)
    seen: list = []
    with running(App(settings, ["fileshare", "catalog", tap(seen, *TYPES)])):
        # When a backup of the file share is due
        event = backup_due("20261122T010000Z-0a1b2c3d")
        with Publisher(settings.broker) as pub:
            pub.publish(event)
        # Then the snapshot is reported, its reference artifact stored, and the catalog completes the set
        wait_for(lambda: {"fileshare-synced", "artifact-stored", "backup-set-completed"} <= {e.type for e in seen},
                 120, what="fileshare-synced, artifact-stored and backup-set-completed")
    synced = next(e for e in seen if e.type == "fileshare-synced")
    stored = next(e for e in seen if e.type == "artifact-stored")
    completed = next(e for e in seen if e.type == "backup-set-completed")
    assert synced.causation_id == event.event_id and synced.correlation_id == event.correlation_id
    assert synced.payload.files == 47 and synced.payload.new_bytes > 0 and not synced.payload.partial
    assert stored.payload.component == "fileshare" and stored.payload.key.endswith("/fileshare/snapshot.json")
    assert completed.payload.components == ("fileshare",)
    assert not any(e.type == "job-failed" for e in seen)


def test_bad_credentials_dead_letter_the_job_with_a_hint_and_a_notification(rabbit_vhost, tmp_path, smb_server):
    # Given a fileshare worker with a wrong password
    settings = worker_settings(rabbit_vhost, tmp_path, smb_server, password="not-the-password")
    seen: list = []
    with running(App(settings, ["fileshare", "catalog", tap(seen, *TYPES)])):     # the catalog plans the set
        # When a backup of the file share is due
        with Publisher(settings.broker) as pub:
            pub.publish(backup_due("set-badcreds"))
        # Then the job is dead-lettered at once and a job-failed notification says how to fix it
        failed = wait_for(lambda: [e for e in seen if e.type == "job-failed"], 60, what="job-failed")
        letters = wait_for(lambda: dead_letters(settings, "fileshare"), 30, what="dead letter")
    p = failed[0].payload
    assert p.worker == "fileshare" and p.error_class == "SourceDenied" and p.severity == "error"
    assert "APPSVC_DR_FILESHARE__PASSWORD" in p.hint and "not-the-password" not in p.message
    assert letters[0].reason == "permanent"
    assert not any(e.type == "fileshare-synced" for e in seen)
