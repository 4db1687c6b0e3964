"""APPSVC_DR_COMPONENTS: a site that does not back up a component gets no queue for its worker, and no backup
set may ask for it (it would wait for ever)."""
from __future__ import annotations

import json

import pytest

from tests.fixtures.rabbit import mgmt, run_cli, settings_for
from tests.fixtures.webhook_server import webhook_server  # noqa: F401 - fixture

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


def test_a_producer_that_bypasses_the_cli_gets_a_set_planned_without_the_unserved_component_and_a_warning(
        rabbit_vhost, tmp_path, webhook_server):  # noqa: F811 - fixture
    from contracts import BackupDue, BackupDuePayload
    from tests.fixtures.rabbit import running, tap, wait_for
    from workers.app import App
    from workers.artifacts.sets import read_plan
    from workers.runtime.publisher import Publisher
    from workers.storage.local import LocalStore
    webhook_server.reset()
    settings = settings_for(rabbit_vhost, store={"kind": "local", "local_path": str(tmp_path / "store")},
                            notify={"webhook_urls": [webhook_server.url("/ops")]}) \
        .model_copy(update={"components": ("secrets",)})
    seen: list = []
    # Given a site that backs up only the secrets, its catalog and notifier running
    app = App(settings, ["catalog", "notifier", tap(seen, "job-failed")])
    with running(app):
        # When a producer publishes straight to RabbitMQ a backup-due that also asks for the file share
        with Publisher(settings.broker) as pub:
            pub.publish(BackupDue(source="rotation-hook", stamp="stamp1", correlation_id="set-9",
                                  payload=BackupDuePayload(backup_set_id="set-9", components=("secrets", "fileshare"),
                                                           reason="secrets-rotated")))
        # Then the operator is warned through the notifier, with what was left out and how to fix it
        wait_for(lambda: webhook_server.received("/ops"), 30, what="unserved-component warning")
    note = webhook_server.received("/ops")[0].json
    assert note["severity"] == "warning" and note["error_class"] == "ComponentNotServed"
    assert "fileshare" in note["message"] and "rotation-hook" in note["message"]
    assert "APPSVC_DR_COMPONENTS" in note["hint"]
    # And the set is planned with what this site delivers, so it can complete, and names what it left out
    plan = read_plan(LocalStore(tmp_path / "store"), "stamp1", "set-9")
    assert plan.components == ("secrets",) and plan.unserved == ("fileshare",)
    assert [e.payload.error_class for e in seen] == ["ComponentNotServed"]


def test_queues_left_by_a_component_the_site_dropped_are_reported_and_deleted_on_request(rabbit_vhost):
    import pika

    from workers.runtime.amqp import connection_parameters
    everything = settings_for(rabbit_vhost)
    # Given a site that used to back up the file share: its queues exist, one event waits, one dead letter
    assert run_cli(everything, "topology", "declare").returncode == 0
    assert run_cli(everything, "publish", "backup-due", "--stamp", "stamp1").returncode == 0
    conn = pika.BlockingConnection(connection_parameters(everything.broker))
    try:
        conn.channel().basic_publish("", "appsvc-dr.fileshare.dlq", b"{}")
    finally:
        conn.close()

    def queues() -> dict[str, int]:
        return {q["name"]: q.get("messages", 0) for q in mgmt("GET", f"/api/queues/{rabbit_vhost}")}  # type: ignore

    assert "appsvc-dr.fileshare" in queues()
    # When the site drops the file share and declares its topology
    site = everything.model_copy(update={"components": ("secrets", "databases")})
    declared = run_cli(site, "topology", "declare")
    # Then it says which queues are left over, that one still receives events, and how to remove them
    assert declared.returncode == 0, declared.stderr
    assert "appsvc-dr.fileshare (" in declared.stderr and "receives events nobody will process" in declared.stderr
    assert "appsvc-dr.fileshare.dlq" in declared.stderr and "--delete-unused" in declared.stderr
    assert "APPSVC_DR_COMPONENTS=secrets,databases" in declared.stderr
    # When the operator asks to delete them
    deleted = run_cli(site, "topology", "declare", "--delete-unused")
    assert deleted.returncode == 0, deleted.stderr
    # Then the worker's queue and retry queues are gone; its dead letters are kept until looked at
    left = {name for name in queues() if ".fileshare" in name}
    assert left == {"appsvc-dr.fileshare.dlq"}, left
    assert "dlq list fileshare" in deleted.stdout
    # And once the dead letters are dealt with, the dead-letter queue goes too and nothing is reported
    mgmt("DELETE", f"/api/queues/{rabbit_vhost}/appsvc-dr.fileshare.dlq/contents")
    assert run_cli(site, "topology", "declare", "--delete-unused").returncode == 0
    assert not any(".fileshare" in name for name in queues())
    again = run_cli(site, "topology", "declare")
    assert again.returncode == 0 and "warning" not in again.stderr.lower()
    assert "appsvc-dr.fileshare" not in again.stdout + again.stderr
