"""One contract for every notification sink, run against real loopback servers (HTTP and SMTP).

Every sink must deliver what failed and how to fix it, classify failures as transient or permanent, and never
leak the webhook token or the SMTP password into its name or its errors.
"""
from __future__ import annotations

import functools
import socket
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterator
from uuid import uuid4

import pytest
from pydantic import SecretStr

from contracts import JobFailed, JobFailedPayload
from tests.fixtures import closed_port
from tests.fixtures.smtp_server import SMTP_PASSWORD, SMTP_USER, SmtpServer, self_signed_tls, smtp_server  # noqa: F401
from tests.fixtures.webhook_server import WebhookServer, webhook_server  # noqa: F401
from workers.senders import JsonWebhook, Notifier, SlackWebhook, SmtpNotifier, TeamsWebhook, build_notifiers
from workers.senders.render import Notification, notification_from_event
from workers.runtime.errors import ConfigurationError, PermanentError, TransientError
from workers.senders.settings import NotifySettings

SECRET = "SECRET-TOKEN-123"
HOOK_PATH = f"/webhookb2/{SECRET}/IncomingWebhook?sig={SECRET}"
HINT = "Grant the backup login db_backupoperator on the database, then retry"
# The loopback test server speaks plain HTTP: allowed explicitly (production refuses http:// by default).
WEBHOOKS = {kind: functools.partial(cls, allow_http=True)
            for kind, cls in {"generic": JsonWebhook, "teams": TeamsWebhook, "slack": SlackWebhook}.items()}


def job_failed(**payload: Any) -> JobFailed:
    fields: dict[str, Any] = dict(worker="db-backup", failed_event_id=uuid4(), failed_event_type="backup-due",
                                  error_class="PermanentError", message="BACKUP DATABASE appservice_hosting failed: "
                                  "permission denied", attempts=1, will_retry=False, hint=HINT,
                                  dead_letter_queue="appsvc-dr.db-backup.dead")
    fields.update(payload)
    return JobFailed(source="worker:db-backup", stamp="stamp1", correlation_id="20261121T010000Z-3f2a9c1b",
                     payload=JobFailedPayload(**fields))


def strings(value: Any) -> str:
    """Every string inside a JSON document, one per line (so escaping does not hide content)."""
    if isinstance(value, dict):
        return "\n".join(strings(v) for v in value.values())
    if isinstance(value, list):
        return "\n".join(strings(v) for v in value)
    return value if isinstance(value, str) else ""


def assert_no_secret(exc: BaseException, *secrets: str) -> None:
    shown = "".join(traceback.format_exception(exc)) + getattr(exc, "hint", "") + repr(exc)
    for secret in secrets:
        assert secret not in shown


@dataclass
class SinkCase:
    kind: str
    make: Callable[[], Notifier]
    delivered: Callable[[], list[str]]
    """Everything received so far, one text per delivery."""


@pytest.fixture(params=["generic", "teams", "slack", "smtp"])
def sink_case(request: pytest.FixtureRequest, webhook_server: WebhookServer,  # noqa: F811
              smtp_server: SmtpServer) -> Iterator[SinkCase]:  # noqa: F811
    webhook_server.reset()
    smtp_server.reset()
    if request.param == "smtp":
        def make() -> Notifier:
            return SmtpNotifier(smtp_server.host, smtp_server.port, sender="dr@example.org",
                                recipients=["ops@example.org", "dba@example.org"], username=SMTP_USER,
                                password=SecretStr(SMTP_PASSWORD), local_hostname="notifier.test", timeout=5,
                                allow_plaintext_auth=True)  # a loopback test server without TLS
        yield SinkCase("smtp", make, lambda: [f"{m.message['Subject']}\n{m.body}" for m in smtp_server.messages])
    else:
        cls = WEBHOOKS[request.param]
        yield SinkCase(request.param, lambda: cls(webhook_server.url(HOOK_PATH), timeout=5),
                       lambda: [strings(r.json) for r in webhook_server.received()])


@pytest.mark.parametrize("severity", ["error", "warning"])
def test_sink_delivers_what_failed_and_how_to_fix(sink_case: SinkCase, severity: str) -> None:
    # Given a dead-lettered backup-due job and a sink pointed at a real loopback server
    event = job_failed(severity=severity)
    notification = notification_from_event(event)
    # When the sink sends the notification
    sink_case.make().send(notification)
    # Then exactly one delivery arrives, saying what failed, how to fix it, and how to replay it
    [text] = sink_case.delivered()
    for expected in (notification.title, HINT, "db-backup", str(event.event_id),
                     str(event.payload.failed_event_id), "appsvc-dr dlq replay db-backup",
                     "permission denied", severity.upper()):
        assert expected in text, f"{expected!r} missing from the {sink_case.kind} delivery"


def test_sink_name_and_repr_hold_no_secret(sink_case: SinkCase) -> None:
    # Given a sink configured with a tokenised URL or an SMTP password
    sink = sink_case.make()
    # Then its name and repr identify it without the token or password
    for shown in (sink.name, repr(sink)):
        assert SECRET not in shown and SMTP_PASSWORD not in shown
    assert sink.name.startswith(f"{'webhook' if sink_case.kind == 'generic' else sink_case.kind}#1 (")
    assert isinstance(sink, Notifier)


@pytest.mark.parametrize("kind", sorted(WEBHOOKS))
def test_webhook_posts_json_to_the_configured_url(webhook_server: WebhookServer, kind: str) -> None:  # noqa: F811
    # Given a webhook sink of each kind
    webhook_server.reset()
    notification = notification_from_event(job_failed())
    # When it sends
    WEBHOOKS[kind](webhook_server.url(HOOK_PATH)).send(notification)
    # Then one JSON POST reached the full URL (token intact) in the kind's own format
    [request] = webhook_server.received()
    assert (request.method, request.path) == ("POST", HOOK_PATH)
    assert request.content_type.startswith("application/json")
    body = request.json
    if kind == "generic":
        assert body["hint"] == HINT and body["worker"] == "db-backup" and body["event_id"] == notification.event_id
        assert body["replay_command"] == "appsvc-dr dlq replay db-backup" and body["severity"] == "error"
    elif kind == "teams":
        [attachment] = body["attachments"]
        assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
        card = attachment["content"]
        assert card["type"] == "AdaptiveCard" and card["body"][0]["text"] == notification.title
        facts = next(block["facts"] for block in card["body"] if block["type"] == "FactSet")
        assert {"title": "Worker", "value": "db-backup"} in facts
    else:
        assert HINT in body["text"] and body["blocks"][0]["type"] == "header"
        assert len(body["blocks"][0]["text"]["text"]) <= 150


@pytest.mark.parametrize("kind", sorted(WEBHOOKS))
@pytest.mark.parametrize("status, expected", [(500, TransientError), (503, TransientError), (429, TransientError),
                                              (404, PermanentError), (401, PermanentError),
                                              (400, PermanentError), (302, PermanentError)])
def test_webhook_classifies_http_errors(webhook_server: WebhookServer, kind: str,  # noqa: F811
                                        status: int, expected: type[Exception]) -> None:
    # Given a webhook server that answers with an error status and echoes the token in its error body
    webhook_server.reset()
    webhook_server.status = status
    webhook_server.error_body = f"bad token {SECRET}".encode()
    sink = WEBHOOKS[kind](webhook_server.url(HOOK_PATH), timeout=5)
    # When the sink sends
    with pytest.raises((TransientError, PermanentError)) as caught:
        sink.send(notification_from_event(job_failed()))
    # Then the error is classified, names the sink and status, and leaks no token
    assert type(caught.value) is expected
    assert sink.name in caught.value.message and str(status) in caught.value.message
    assert "bad token ***" in caught.value.message  # the server's explanation survives, redacted
    assert_no_secret(caught.value, SECRET)
    if expected is PermanentError and status != 302:
        assert "notify." in caught.value.hint  # names the setting to check


def test_webhook_honours_retry_after(webhook_server: WebhookServer) -> None:  # noqa: F811
    # Given a server that rate-limits with Retry-After
    webhook_server.reset()
    webhook_server.status, webhook_server.retry_after = 429, 7
    # When a sink sends, Then the transient error carries the requested delay
    with pytest.raises(TransientError) as caught:
        WEBHOOKS["generic"](webhook_server.url(HOOK_PATH)).send(notification_from_event(job_failed()))
    assert caught.value.delay == 7


@pytest.mark.parametrize("kind", sorted(WEBHOOKS))
def test_webhook_unreachable_is_transient(kind: str) -> None:
    # Given a URL on a loopback port nobody listens on
    sink = WEBHOOKS[kind](f"http://127.0.0.1:{closed_port()}{HOOK_PATH}", timeout=2)
    # When the sink sends, Then connection refused is transient and leaks no token
    with pytest.raises(TransientError) as caught:
        sink.send(notification_from_event(job_failed()))
    assert_no_secret(caught.value, SECRET)


def test_webhook_timeout_is_transient() -> None:
    # Given a server that accepts connections but never answers
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        sink = WEBHOOKS["generic"](f"http://127.0.0.1:{silent.getsockname()[1]}{HOOK_PATH}", timeout=0.3)
        # When the sink sends, Then the timeout is transient
        with pytest.raises(TransientError, match="timed out"):
            sink.send(notification_from_event(job_failed()))


def smtp_sink(server: SmtpServer, **kwargs: Any) -> SmtpNotifier:
    kwargs.setdefault("timeout", 5)
    return SmtpNotifier(server.host, server.port, sender="dr@example.org", recipients=["ops@example.org"],
                        local_hostname="notifier.test", **kwargs)


def test_smtp_mail_subject_recipients_and_login(smtp_server: SmtpServer) -> None:  # noqa: F811
    # Given an SMTP sink that logs in (unencrypted, explicitly allowed: TLS logins are in test_smtp_login.py)
    smtp_server.reset()
    notification: Notification = notification_from_event(job_failed())
    # When it sends
    smtp_sink(smtp_server, username=SMTP_USER, password=SMTP_PASSWORD, allow_plaintext_auth=True).send(notification)
    # Then the mail has the documented subject, went to the recipients, and the login was used
    [mail] = smtp_server.messages
    assert mail.message["Subject"] == f"[appservice-dr] ERROR db-backup: {notification.what_failed}"
    assert mail.rcpt_tos == ["ops@example.org"] and mail.login == SMTP_USER
    assert mail.body.index("How to fix:") < mail.body.index("Details:")


@pytest.mark.parametrize("reply, expected", [("451 4.3.0 try again later", TransientError),
                                             ("554 5.7.1 rejected by policy", PermanentError)])
def test_smtp_classifies_server_replies(smtp_server: SmtpServer, reply: str,  # noqa: F811
                                        expected: type[Exception]) -> None:
    # Given a mail server that rejects the message with a 4xx or 5xx reply
    smtp_server.reset()
    smtp_server.data_reply = reply
    # When the sink sends, Then 4xx is transient and 5xx permanent
    with pytest.raises((TransientError, PermanentError)) as caught:
        smtp_sink(smtp_server).send(notification_from_event(job_failed()))
    assert type(caught.value) is expected and reply.split()[0] in caught.value.message


def test_smtp_wrong_password_is_permanent_and_not_leaked(smtp_server: SmtpServer) -> None:  # noqa: F811
    # Given a sink with a wrong password
    smtp_server.reset()
    wrong = "Wrong-pw-998877"
    # When it sends, Then the rejected login is permanent, names the settings, and leaks neither password
    with pytest.raises(PermanentError) as caught:
        smtp_sink(smtp_server, username=SMTP_USER, password=wrong,
                  allow_plaintext_auth=True).send(notification_from_event(job_failed()))
    assert "smtp_password" in caught.value.hint
    assert_no_secret(caught.value, wrong, SMTP_PASSWORD)


def test_smtp_server_down_is_transient() -> None:
    # Given no SMTP server on the port
    sink = SmtpNotifier("127.0.0.1", closed_port(), sender="dr@example.org", recipients=["ops@example.org"],
                        username=SMTP_USER, password=SMTP_PASSWORD, starttls=True, local_hostname="notifier.test",
                        timeout=2)
    # When it sends, Then that is transient and leaks no password
    with pytest.raises(TransientError) as caught:
        sink.send(notification_from_event(job_failed()))
    assert_no_secret(caught.value, SMTP_PASSWORD)


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "ssl"])
def test_smtp_tls(tmp_path: Any, implicit: bool) -> None:
    # Given a TLS-capable server with a self-signed certificate
    server_ctx, client_ctx = self_signed_tls(tmp_path)
    with SmtpServer(tls_context=server_ctx, require_starttls=not implicit, implicit_tls=implicit) as server:
        mode = {"use_ssl": True} if implicit else {"starttls": True}
        # When a sink that trusts the certificate sends, Then the mail arrives over TLS
        smtp_sink(server, ssl_context=client_ctx, **mode).send(notification_from_event(job_failed()))
        assert [m.tls for m in server.messages] == [True]
        # When a sink that does not trust it sends, Then that is a permanent error with a CA hint
        with pytest.raises(PermanentError, match="not trusted"):
            smtp_sink(server, **mode).send(notification_from_event(job_failed()))


def test_factory_builds_one_sink_per_setting_without_secrets() -> None:
    # Given settings with every kind of sink
    settings = NotifySettings(webhook_urls=[f"https://example.org/h/{SECRET}"], teams_urls=[
        f"https://teams.example.org/{SECRET}", f"https://teams2.example.org/{SECRET}"],
        slack_urls=[f"https://hooks.slack.test/services/{SECRET}"], smtp_host="mail.example.org",
        smtp_to=["ops@example.org"], smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD, smtp_starttls=True)
    # When the sinks are built
    sinks = build_notifiers(settings)
    # Then there is one per URL plus SMTP, named by kind, index and host only
    assert [s.name for s in sinks] == ["webhook#1 (host example.org)", "teams#1 (host teams.example.org)",
                                       "teams#2 (host teams2.example.org)", "slack#1 (host hooks.slack.test)",
                                       "smtp#1 (mail.example.org:25 starttls, 1 recipient(s))"]


@pytest.mark.parametrize("settings", [NotifySettings(webhook_urls=[f"ftp://example.org/{SECRET}"]),
                                      NotifySettings(slack_urls=[f"not a url {SECRET}"]),
                                      NotifySettings(smtp_host="mail.example.org"),
                                      NotifySettings(smtp_host="m", smtp_to=["a@b"], smtp_ssl=True,
                                                     smtp_starttls=True)])
def test_factory_rejects_unusable_settings_without_echoing_them(settings: NotifySettings) -> None:
    # Given an unusable setting, When the sinks are built, Then start-up fails naming the setting, not its value
    with pytest.raises(ConfigurationError, match="notify[.]") as caught:
        build_notifiers(settings)
    assert_no_secret(caught.value, SECRET)


@pytest.mark.parametrize("field", ["webhook_urls", "teams_urls", "slack_urls"])
def test_http_webhooks_are_refused_at_start_up_unless_allowed(webhook_server: WebhookServer,  # noqa: F811
                                                              field: str) -> None:
    # Given a plain-HTTP webhook URL (the real loopback server) and the default settings
    webhook_server.reset()
    url = webhook_server.url(HOOK_PATH)
    # When the notifier builds its sinks, Then start-up fails naming the setting and the fix, not the token
    with pytest.raises(ConfigurationError, match=f"notify.{field}\\[0\\] is an http:// URL") as caught:
        build_notifiers(NotifySettings(**{field: [url]}))
    assert "ALLOW_HTTP_WEBHOOKS" in caught.value.hint and "https://" in caught.value.hint
    assert_no_secret(caught.value, SECRET)
    # And when plain HTTP is explicitly allowed, the same URL delivers
    [sink] = build_notifiers(NotifySettings(**{field: [url]}, allow_http_webhooks=True))
    sink.send(notification_from_event(job_failed()))
    assert len(webhook_server.received(HOOK_PATH)) == 1
