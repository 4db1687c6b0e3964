"""`appsvc-dr` against the real broker: topology, publish, dlq list/show/replay, start-up errors."""
from __future__ import annotations

import subprocess

import pika
import pytest

from tests.fixtures.rabbit import queue_count, run_cli, running, settings_for, wait_for
from tests.integration.sample_workers import flaky
from workers.app import App
from workers.runtime.amqp import connection_parameters
from workers.runtime.topology import Topology

pytestmark = pytest.mark.integration


def cli(settings, *args: str, **env_extra: str) -> subprocess.CompletedProcess:
    return run_cli(settings, *args, timeout=60, **env_extra)


def test_topology_declare_then_publish_lands_in_the_notifier_queue(settings):
    # Given a declared topology
    out = cli(settings, "topology", "declare")
    assert out.returncode == 0, out.stderr
    assert "appsvc-dr.notifier" in out.stdout and "appsvc-dr.notifier.dlq" in out.stdout
    # When a job-failed event is published from the command line with options
    out = cli(settings, "publish", "job-failed", "--stamp", "stamp1", "-p", "worker=upload",
              "-p", "failed_event_id=null", "-p", "failed_event_type=null", "-p", "error_class=X",
              "-p", "message=disk full", "-p", "attempts=1", "-p", "will_retry=false", "-p", "hint=free space")
    # Then it is confirmed and waits in the notifier's queue
    assert out.returncode == 0, out.stderr
    assert "published job-failed" in out.stdout
    q = Topology.from_settings(settings.broker, settings.retry).queues("notifier").main
    wait_for(lambda: queue_count(settings.broker.vhost, q) == 1, 10, what="event in queue")


def test_publish_refuses_invalid_input_and_unroutable_events(settings):
    bad = cli(settings, "publish", "backup-due", "-p", "reason=whim")
    assert bad.returncode == 2 and "payload.reason" in bad.stderr and "how to fix" in bad.stderr
    # In a fresh vhost with only the exchange, no queue is bound: an error, never silently dropped
    with pika.BlockingConnection(connection_parameters(settings.broker)) as conn:
        conn.channel().exchange_declare(settings.broker.exchange, exchange_type="topic", durable=True)
    lost = cli(settings, "publish", "backup-due", "-p", "reason=manual")
    assert lost.returncode == 2 and "no queue is bound for 'backup-due'" in lost.stderr


def test_dlq_list_show_and_replay_from_the_command_line(settings, trace_dir):
    # Given a dead-lettered event of the flaky worker
    (trace_dir / "broken").write_text("")
    app = App(settings, [flaky])
    with running(app):
        out = cli(settings, "publish", "backup-due", "--set-id", "set-cli")
        assert out.returncode == 0, out.stderr
        wait_for(lambda: "permanent" in cli(settings, "dlq", "list", "flaky").stdout, 20, what="dead letter")
        # When the operator looks at it
        listing = cli(settings, "dlq", "list", "flaky").stdout
        shown = cli(settings, "dlq", "show", "flaky").stdout
        assert "the target store is read-only" in listing
        assert "how to fix: Make the store writable, then replay." in shown and '"set-cli"' in shown
        # And replays it after fixing the cause
        (trace_dir / "broken").unlink()
        replayed = cli(settings, "dlq", "replay", "flaky")
        assert "replayed 1 message(s)" in replayed.stdout
        wait_for(lambda: list(trace_dir.glob("*.done")), 20, what="replayed job")
    assert "no dead letters" in cli(settings, "dlq", "list", "flaky").stdout


def test_worker_with_wrong_credentials_stops_at_start_with_a_clear_message(rabbit_vhost):
    settings = settings_for(rabbit_vhost)
    out = cli(settings, "worker", "notifier", APPSVC_DR_BROKER__USERNAME="nobody",
              APPSVC_DR_BROKER__PASSWORD="wrong-CANARY")
    assert out.returncode == 2
    assert "RabbitMQ refused the login" in out.stderr and "APPSVC_DR_BROKER__USERNAME" in out.stderr
    assert "wrong-CANARY" not in out.stderr + out.stdout


def test_unknown_worker_name_is_a_configuration_error(settings):
    out = cli(settings, "worker", "nonesuch")
    assert out.returncode == 2 and "unknown worker 'nonesuch'" in out.stderr


def test_schedule_once_publishes_a_scheduled_backup_due(settings, tmp_path):
    # Given a declared topology
    assert cli(settings, "topology", "declare").returncode == 0
    # When the scheduler runs until its next 2-second slot (claiming it in the store)
    out = cli(settings, "schedule", "--every", "2s", "--components", "databases", "--once",
              APPSVC_DR_STORE__LOCAL_PATH=str(tmp_path))
    # Then one backup-due with reason schedule waits for the catalog
    assert out.returncode == 0, out.stderr
    q = Topology.from_settings(settings.broker, settings.retry).queues("catalog").main
    wait_for(lambda: queue_count(settings.broker.vhost, q) == 1, 15, what="scheduled event")
    assert "published backup-due" in out.stderr
    assert {p.parent.name for p in tmp_path.glob("stamp1/schedule/*/*.json")} == {"databases"}
