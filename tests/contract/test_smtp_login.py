"""SMTP login against the real aiosmtpd server: only over TLS unless explicitly allowed, never leaked.

AUTH PLAIN and AUTH LOGIN send the password base64-encoded, which is plaintext to anyone on the path, and
some servers quote the rejected AUTH line back in their error reply. So: no login without STARTTLS or
implicit TLS (refused when the sink is built), and no credential form in any error.
"""
from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.contract.test_notifier_contract import assert_no_secret, job_failed
from tests.fixtures.smtp_server import SMTP_PASSWORD, SMTP_USER, SmtpServer, self_signed_tls
from workers.senders import SmtpNotifier, build_notifiers
from workers.senders.render import notification_from_event
from workers.runtime.errors import ConfigurationError, PermanentError
from workers.senders.settings import NotifySettings


def sink(server: SmtpServer, **kwargs) -> SmtpNotifier:
    return SmtpNotifier(server.host, server.port, sender="dr@example.org", recipients=["ops@example.org"],
                        local_hostname="notifier.test", timeout=5, username=SMTP_USER, **kwargs)


def credential_forms(password: str) -> list[str]:
    return [password, base64.b64encode(password.encode()).decode(),
            base64.b64encode(f"\0{SMTP_USER}\0{password}".encode()).decode()]


def test_a_login_without_tls_is_refused_at_start_up_and_never_reaches_the_server() -> None:
    # Given a real SMTP server offering AUTH on a plain connection, and settings with a login but no TLS
    with SmtpServer() as server:
        settings = NotifySettings(smtp_host=server.host, smtp_port=server.port, smtp_to=["ops@example.org"],
                                  smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD)
        # When the notifier builds its sinks, Then start-up fails saying how to fix it
        with pytest.raises(ConfigurationError, match="without TLS") as caught:
            build_notifiers(settings)
        assert "SMTP_STARTTLS" in caught.value.hint and "SMTP_ALLOW_PLAINTEXT_AUTH" in caught.value.hint
        # And the server never saw an AUTH command (nor a mail); the message holds no credential form
        assert server.auth_commands == [] and server.messages == []
        assert_no_secret(caught.value, *credential_forms(SMTP_PASSWORD))


def test_starttls_asked_for_but_not_offered_fails_permanently_before_any_auth() -> None:
    # Given a server that offers AUTH but no STARTTLS, and a sink that insists on STARTTLS
    with SmtpServer() as server:
        # When the sink sends, Then that fails permanently and the server never received AUTH
        with pytest.raises(PermanentError) as caught:
            sink(server, password=SMTP_PASSWORD, starttls=True).send(notification_from_event(job_failed()))
        assert "smtp_starttls" in caught.value.hint
        assert server.auth_commands == [] and server.messages == []


def test_login_over_starttls_works(tmp_path: Path) -> None:
    # Given a server with STARTTLS (self-signed certificate the sink trusts) and a login
    server_ctx, client_ctx = self_signed_tls(tmp_path)
    with SmtpServer(tls_context=server_ctx, require_starttls=True) as server:
        # When the sink sends
        sink(server, password=SMTP_PASSWORD, starttls=True, ssl_context=client_ctx).send(
            notification_from_event(job_failed()))
        # Then it logged in once, inside TLS, and the mail arrived over TLS from that login
        assert len(server.auth_commands) == 1
        assert [(m.login, m.tls) for m in server.messages] == [(SMTP_USER, True)]


@pytest.mark.parametrize("mode", ["starttls", "allowed-plaintext"])
def test_a_rejected_login_leaks_no_form_of_the_password_even_when_the_server_echoes_it(
        tmp_path: Path, mode: str) -> None:
    # Given a server that quotes the rejected AUTH line (base64) and the password back, and a wrong password
    wrong = "Wrong-Pw-77*secret"
    server_ctx, client_ctx = self_signed_tls(tmp_path)
    tls = {"tls_context": server_ctx} if mode == "starttls" else {}
    options = ({"starttls": True, "ssl_context": client_ctx} if mode == "starttls"
               else {"allow_plaintext_auth": True})
    with SmtpServer(echo_auth_failures=True, **tls) as server:
        # When the sink sends
        with pytest.raises(PermanentError) as caught:
            sink(server, password=wrong, **options).send(notification_from_event(job_failed()))
        # Then the server did receive the login (and quoted it back), but the error, its hint, repr and
        # traceback hold neither the password nor its base64 forms, only the redaction mark
        assert server.auth_commands[0].startswith("PLAIN ")
    assert "535" in caught.value.message and "***" in caught.value.message
    assert "smtp_password" in caught.value.hint
    assert_no_secret(caught.value, *credential_forms(wrong))
