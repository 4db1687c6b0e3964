"""A permanent failure travels all the way: dead letter → job-failed → notifier → real webhook + SMTP."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid

import pytest

from contracts import BackupDue, BackupDuePayload, JobFailed, JobFailedPayload
from tests.fixtures.rabbit import dead_letters, env_for, queue_info, running, settings_for, wait_for
from tests.fixtures.smtp_server import SMTP_PASSWORD, SMTP_USER, smtp_server  # noqa: F401 - fixture
from tests.fixtures.webhook_server import webhook_server  # noqa: F401 - fixture
from tests.integration.sample_workers import flaky
from workers.app import App
from workers.runtime.publisher import Publisher
from workers.runtime.topology import Topology

pytestmark = pytest.mark.integration


def test_permanent_failure_reaches_the_webhook_and_the_mailbox_with_how_to_fix(
        rabbit_vhost, trace_dir, webhook_server, smtp_server):  # noqa: F811 - fixtures
    # Given a broken worker and a notifier with a generic webhook, a Teams webhook and SMTP e-mail
    webhook_server.reset()
    smtp_server.reset()
    settings = settings_for(rabbit_vhost, notify={
        "webhook_urls": [webhook_server.url("/generic/SECRET-TOKEN-1")],
        "teams_urls": [webhook_server.url("/teams/SECRET-TOKEN-2")],
        "smtp_host": "127.0.0.1", "smtp_port": smtp_server.port, "smtp_to": ["ops@example.org"],
        "smtp_username": SMTP_USER, "smtp_password": SMTP_PASSWORD})
    (trace_dir / "broken").write_text("")
    app = App(settings, [flaky, "notifier"])
    with running(app):
        # When an event fails permanently
        event = BackupDue(source="test", stamp="stamp1", correlation_id="set-9",
                          payload=BackupDuePayload(backup_set_id="set-9"))
        with Publisher(settings.broker) as pub:
            pub.publish(event)
        # Then both webhooks and the mailbox receive a notification naming the failure and the fix
        wait_for(lambda: len(webhook_server.received()) >= 2 and smtp_server.messages, 30, what="notifications")
        metrics = app.metrics.notifications
    generic = webhook_server.received("/generic/SECRET-TOKEN-1")[0].json
    assert str(event.event_id) in str(generic) and "Make the store writable, then replay." in str(generic)
    teams = webhook_server.received("/teams/SECRET-TOKEN-2")[0].json
    assert "Make the store writable" in str(teams) and "flaky" in str(teams)
    mail = smtp_server.messages[0]
    assert "flaky" in mail.message.get("Subject")
    assert "Make the store writable, then replay." in mail.body
    assert "appsvc-dr dlq replay flaky" in mail.body
    # And the failed event waits in the dead-letter queue; the notifier's own queue is drained
    assert [d.event_id for d in dead_letters(settings, "flaky")] == [str(event.event_id)]
    assert dead_letters(settings, "notifier") == []
    sent = sum(s.value for m in metrics.collect() for s in m.samples
               if s.name.endswith("_total") and s.labels["outcome"] == "sent")
    assert sent == 3


def test_suppressed_repeats_are_summarised_when_the_window_closes_without_another_failure(
        rabbit_vhost, webhook_server, smtp_server):  # noqa: F811 - fixtures
    # Given a notifier grouping identical failures for 1.5 s, with a webhook and SMTP e-mail
    webhook_server.reset()
    smtp_server.reset()
    settings = settings_for(rabbit_vhost, notify={
        "webhook_urls": [webhook_server.url("/grouped/SECRET-TOKEN-3")], "group_window": 1.5,
        "smtp_host": "127.0.0.1", "smtp_port": smtp_server.port, "smtp_to": ["ops@example.org"],
        "smtp_username": SMTP_USER, "smtp_password": SMTP_PASSWORD})
    app = App(settings, ["notifier"])
    with running(app):
        # When the same failure is reported three times at once, and then never again
        with Publisher(settings.broker) as pub:
            for attempt in range(3):
                pub.publish(job_failed(f"upload of set-{attempt} failed: S3 endpoint 127.0.0.1:9 refused"))
        wait_for(lambda: webhook_server.received() and smtp_server.messages, 30, what="first notification")
        # And the webhook answers the summary's first attempt with 503
        webhook_server.fail_next(503)
        # Then, once the window has closed, a summary of the two repeats arrives on every sink by itself
        wait_for(lambda: len(smtp_server.messages) == 2, 30, what="summary mail")
        wait_for(lambda: len([r for r in webhook_server.received() if r.status == 200]) == 2, 30,
                 what="summary webhook after a retry")
    hooks = [r for r in webhook_server.received() if r.status == 200]
    first, summary = hooks[0].json, hooks[1].json
    assert first["repeat_count"] == 0 and summary["repeat_count"] == 2 and summary["last_seen"]
    assert "2 more identical failures of artifact-ready (upload) between" in summary["summary"]
    assert "How to fix: Start the S3 server" in summary["summary"]
    assert [r.status for r in webhook_server.received()] == [200, 503, 200]
    mail = smtp_server.messages[1]
    assert "2 more identical failures" in mail.message.get("Subject") and "Start the S3 server" in mail.body
    # And no secret (webhook token, SMTP password) is in any notification
    everything = b"".join(r.body for r in webhook_server.received()) + b"".join(m.content for m in smtp_server.messages)
    assert b"SECRET-TOKEN" not in everything and SMTP_PASSWORD.encode() not in everything
    assert dead_letters(settings, "notifier") == []


def job_failed(message: str) -> JobFailed:
    return JobFailed(source="worker:upload", stamp="stamp1", correlation_id="set-7", payload=JobFailedPayload(
        worker="upload", failed_event_id=uuid.uuid4(), failed_event_type="artifact-ready",
        error_class="TransientError", message=message, attempts=5, will_retry=False,
        hint="Start the S3 server or fix store.s3_endpoint.", dead_letter_queue="appsvc-dr.upload.dlq"))


def test_repeats_suppressed_before_the_notifier_is_killed_are_reported_by_the_next_one(
        rabbit_vhost, webhook_server, tmp_path):  # noqa: F811 - fixtures
    # Given a notifier process (appsvc-dr run) grouping for an hour, keeping what is pending in a file
    webhook_server.reset()
    pending = tmp_path / "notifier" / "pending.json"
    settings = settings_for(rabbit_vhost, notify={"webhook_urls": [webhook_server.url("/killed/SECRET-TOKEN-4")],
                                                  "group_window": 3600, "pending_file": str(pending)})
    env = env_for(settings)
    first = subprocess.Popen([sys.executable, "-m", "workers.cli", "run", "--workers", "notifier"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    second = None
    try:
        queue = Topology.from_settings(settings.broker, settings.retry).queues("notifier").main
        wait_for(lambda: _consumers(rabbit_vhost, queue), 30, what="the notifier consuming")
        # When the same failure is reported three times: one notification, two repeats suppressed
        with Publisher(settings.broker) as pub:
            for attempt in range(3):
                pub.publish(job_failed(f"upload of set-{attempt} failed: S3 endpoint 127.0.0.1:9 refused"))
        wait_for(lambda: webhook_server.received(), 30, what="first notification")
        wait_for(lambda: pending.exists() and '"count": 2' in pending.read_text(), 30, what="two repeats journaled")
        # And the process is killed outright (no shutdown flush), and a new one starts
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert len(webhook_server.received()) == 1
        second = subprocess.Popen([sys.executable, "-m", "workers.cli", "run", "--workers", "notifier"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # Then the new one reports the two repeats at once, without waiting for the hour or another failure
        # (a repeat whose ack the kill beat is redelivered, and notified afresh: at least once, never lost)
        deadline = time.monotonic() + 30
        while not _summaries(webhook_server) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        outputs = "\n---\n".join(_stopped(proc)[-3000:] for proc in (first, second) if proc is not None)
    assert _summaries(webhook_server), f"no summary from the restarted notifier; the notifiers printed:\n{outputs}"
    [summary] = _summaries(webhook_server)
    assert summary["repeat_count"] == 2 and "2 more identical failures of artifact-ready" in summary["summary"]
    assert "SECRET-TOKEN" not in pending.read_text() and '"pending": []' in pending.read_text()


def _consumers(vhost_name: str, queue: str) -> int:
    try:
        return int(queue_info(vhost_name, queue).get("consumers", 0) or 0)
    except OSError:                                     # not declared yet
        return 0


def _stopped(proc: subprocess.Popen) -> str:
    """Stop a worker process (SIGTERM, SIGKILL after 20 s); what it printed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=20)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate(timeout=10)[0] + "\n(killed: it did not stop within 20 s of SIGTERM)"


def _summaries(webhook_server) -> list[dict]:  # noqa: F811 - fixture
    return [r.json for r in webhook_server.received() if r.status == 200 and r.json.get("repeat_count")]
