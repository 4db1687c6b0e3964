"""A permanent failure travels all the way: dead letter → job-failed → notifier → real webhook + SMTP."""
from __future__ import annotations

import pytest

from contracts import BackupDue, BackupDuePayload
from tests.fixtures.rabbit import running, settings_for, wait_for
from tests.fixtures.smtp_server import SMTP_PASSWORD, SMTP_USER, smtp_server  # noqa: F401 - fixture
from tests.fixtures.webhook_server import webhook_server  # noqa: F401 - fixture
from tests.integration.sample_workers import flaky
from workers.app import App
from workers.runtime import dlq
from workers.runtime.publisher import Publisher

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
    assert [d.event_id for d in dlq.peek(settings, "flaky")] == [str(event.event_id)]
    assert dlq.peek(settings, "notifier") == []
    sent = sum(s.value for m in metrics.collect() for s in m.samples
               if s.name.endswith("_total") and s.labels["outcome"] == "sent")
    assert sent == 3
