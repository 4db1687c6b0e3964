"""APPSVC_DR_COMPONENTS: a site that does not back up a component gets no queue for its worker, and no backup
set may ask for it (it would wait for ever)."""
from __future__ import annotations

import json

import pytest

from tests.fixtures.rabbit import mgmt, run_cli, settings_for

pytestmark = pytest.mark.integration


def test_a_site_without_the_file_share_declares_no_fileshare_queue_and_refuses_to_ask_for_it(rabbit_vhost):
    settings = settings_for(rabbit_vhost).model_copy(update={"components": ("secrets", "databases")})
    # When the operator declares the topology
    declared = run_cli(settings, "topology", "declare")
    assert declared.returncode == 0, declared.stderr
    queues = {q["name"] for q in mgmt("GET", f"/api/queues/{rabbit_vhost}")}  # type: ignore[union-attr]
    # Then the queues of the site's workers exist, and none for the file-share worker
    assert {"appsvc-dr.db-backup", "appsvc-dr.secrets", "appsvc-dr.upload", "appsvc-dr.catalog",
            "appsvc-dr.notifier"} <= queues, queues
    assert not any("fileshare" in q for q in queues)
    # A backup set asks for the site's components by default, and asking for the file share is refused
    default = run_cli(settings, "publish", "backup-due", "--dry-run")
    assert default.returncode == 0, default.stderr
    assert json.loads(default.stdout)["payload"]["components"] == ["secrets", "databases"]
    refused = run_cli(settings, "publish", "backup-due", "-p", 'components=["databases", "fileshare"]')
    assert refused.returncode == 2
    assert "does not back up fileshare" in refused.stderr and "APPSVC_DR_COMPONENTS" in refused.stderr
    scheduled = run_cli(settings, "schedule", "--components", "fileshare", "--once")
    assert scheduled.returncode == 2 and "does not back up fileshare" in scheduled.stderr


def test_a_whole_backup_due_event_file_is_held_to_the_site_components_too(rabbit_vhost, tmp_path):
    from contracts import BackupDue, BackupDuePayload
    settings = settings_for(rabbit_vhost).model_copy(update={"components": ("databases",)})
    event = BackupDue(source="test", stamp="stamp1", correlation_id="set-1",
                      payload=BackupDuePayload(backup_set_id="set-1", components=("databases", "secrets")))
    (tmp_path / "event.json").write_bytes(event.to_json())
    refused = run_cli(settings, "publish", "backup-due", "--event-file", str(tmp_path / "event.json"), "--dry-run")
    assert refused.returncode == 2 and "does not back up secrets" in refused.stderr
