"""E-mail sink over stdlib ``smtplib``: plain-text mail, optional implicit TLS / STARTTLS and login.

Failures are classified where they happen: connection errors, timeouts and SMTP 4xx replies are transient;
5xx replies (rejected login, refused sender or recipients), missing server features and TLS set-up errors are
permanent, with a hint naming the ``notify.smtp_*`` setting to check.

Credentials only ever cross an encrypted connection: with a login configured and neither implicit TLS nor
STARTTLS, the sink refuses to be built (unless ``notify.smtp_allow_plaintext_auth`` says otherwise), and it
checks the socket is TLS right before ``AUTH``. Neither the password nor any base64 form of it (AUTH PLAIN /
LOGIN send those, and some servers quote them back in their error replies) appears in a name, repr or error.
"""
from __future__ import annotations

import base64
import binascii
import logging
import re
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from pydantic import SecretStr

from workers.senders.base import REDACTED
from workers.senders.render import Notification
from workers.runtime.errors import ConfigurationError, PermanentError, TransientError

log = logging.getLogger(__name__)

ENV = "APPSVC_DR_NOTIFY__"
_BASE64ISH = re.compile(r"[A-Za-z0-9+/=_-]{8,}")
PLAINTEXT_HINT = (f"Use TLS: set {ENV}SMTP_STARTTLS=true (port 587) or {ENV}SMTP_SSL=true (port 465). Only on a "
                  f"trusted network, to send the login unencrypted, set {ENV}SMTP_ALLOW_PLAINTEXT_AUTH=true.")


def credential_forms(username: str, password: str) -> list[str]:
    """The password and what AUTH PLAIN / LOGIN put on the wire for it (base64), longest first."""
    if not password:
        return []
    raw = [password, f"\0{username}\0{password}", f"{username}\0{username}\0{password}"]
    forms = {password, *(base64.b64encode(r.encode()).decode() for r in raw)}
    return sorted(forms, key=len, reverse=True)


class SmtpNotifier:
    """Sends one plain-text mail per notification to every address in ``recipients``."""

    def __init__(self, host: str, port: int = 25, *, sender: str, recipients: list[str],
                 username: str | None = None, password: SecretStr | str | None = None,
                 starttls: bool = False, use_ssl: bool = False, timeout: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None, local_hostname: str | None = None,
                 index: int = 1, allow_plaintext_auth: bool = False) -> None:
        if not recipients:
            raise ValueError("SmtpNotifier needs at least one recipient")
        if username and not (starttls or use_ssl) and not allow_plaintext_auth:
            raise ConfigurationError(f"notify.smtp_username is set for {host}:{port} without TLS: the login would "
                                     "cross the network unencrypted", hint=PLAINTEXT_HINT)
        self.allow_plaintext_auth = allow_plaintext_auth
        self.host, self.port, self.sender, self.recipients = host, port, sender, list(recipients)
        self.username = username
        self._password = password if isinstance(password, SecretStr) or password is None else SecretStr(password)
        self._secrets = credential_forms(username or "", self._password.get_secret_value() if self._password else "")
        self.starttls, self.use_ssl, self.timeout = starttls, use_ssl, timeout
        self._ssl_context = ssl_context
        self._local_hostname = local_hostname
        mode = " ssl" if use_ssl else " starttls" if starttls else ""
        self.name = f"smtp#{index} ({host}:{port}{mode}, {len(self.recipients)} recipient(s))"

    def __repr__(self) -> str:
        return f"<SmtpNotifier {self.name}>"

    def message(self, notification: Notification) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = notification.title
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = make_msgid(domain="appservice-dr")
        msg["X-Appservice-Dr-Event-Id"] = notification.event_id
        msg["X-Appservice-Dr-Worker"] = notification.worker
        msg["X-Appservice-Dr-Severity"] = notification.severity
        msg.set_content(notification.text() + "\n")
        return msg

    def send(self, notification: Notification) -> None:
        msg = self.message(notification)
        try:
            refused = self._deliver(msg)
        except Exception as exc:  # noqa: BLE001 - every failure is classified below
            error = self._classify(exc)
        else:
            if refused:
                log.warning("%s: %d of %d recipient(s) refused the notification (check notify.smtp_to)",
                            self.name, len(refused), len(self.recipients))
            return
        raise error from None  # smtplib exceptions may quote the server's reply to AUTH

    def _context(self) -> ssl.SSLContext:
        return self._ssl_context or ssl.create_default_context()

    def _deliver(self, msg: EmailMessage) -> dict[str, tuple[int, bytes]]:
        client: smtplib.SMTP
        if self.use_ssl:
            client = smtplib.SMTP_SSL(self.host, self.port, local_hostname=self._local_hostname,
                                      timeout=self.timeout, context=self._context())
        else:
            client = smtplib.SMTP(self.host, self.port, local_hostname=self._local_hostname, timeout=self.timeout)
        with client:
            if self.starttls:
                client.starttls(context=self._context())
            if self.username:
                if not isinstance(client.sock, ssl.SSLSocket) and not self.allow_plaintext_auth:
                    raise PermanentError(f"{self.name}: refusing to log in over an unencrypted connection",
                                         hint=PLAINTEXT_HINT)
                client.login(self.username, self._password.get_secret_value() if self._password else "")
            return client.send_message(msg)

    def _clean(self, text: bytes | str) -> str:
        """Server text, one line, at most 200 characters, every credential form (if echoed) redacted."""
        reply = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        reply = " ".join(reply.split())
        for secret in self._secrets:
            reply = reply.replace(secret, REDACTED)
        return _BASE64ISH.sub(self._redact_encoded, reply)[:200]

    def _redact_encoded(self, match: re.Match[str]) -> str:
        """A base64-looking word that decodes to bytes holding 4+ bytes of the password (e.g. a cut echo)."""
        word = match.group(0)
        password = self._password.get_secret_value().encode() if self._password else b""
        if password:
            try:
                decoded = base64.b64decode(word + "=" * (-len(word) % 4), altchars=b"-_" if "-" in word or
                                           "_" in word else None)
            except (binascii.Error, ValueError):
                return word
            size = min(4, len(password))
            if any(password[i:i + size] in decoded for i in range(len(password) - size + 1)):
                return REDACTED
        return word

    def _classify(self, exc: Exception) -> Exception:
        if isinstance(exc, (PermanentError, TransientError)):
            return exc
        where = f"{self.name}:"
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            codes = [code for code, _ in exc.recipients.values()]
            message = f"{where} every recipient was refused ({', '.join(map(str, sorted(set(codes)))) or '?'})"
            if codes and all(400 <= c < 500 for c in codes):
                return TransientError(message)
            return PermanentError(message, hint=f"Check the addresses in notify.smtp_to ({ENV}SMTP_TO) and that "
                                                f"the server relays for notify.smtp_from.")
        if isinstance(exc, smtplib.SMTPResponseException):
            message = f"{where} server replied {exc.smtp_code} {self._clean(exc.smtp_error)}"
            if 400 <= exc.smtp_code < 500:
                return TransientError(message)
            if isinstance(exc, smtplib.SMTPAuthenticationError):
                hint = (f"Login was rejected: check notify.smtp_username and notify.smtp_password "
                        f"({ENV}SMTP_USERNAME / {ENV}SMTP_PASSWORD).")
            elif isinstance(exc, smtplib.SMTPSenderRefused):
                hint = f"The server refuses the sender: check notify.smtp_from ({ENV}SMTP_FROM)."
            else:
                hint = ("The mail server rejected the notification: check notify.smtp_from, notify.smtp_to and "
                        "whether the server requires login (notify.smtp_username).")
            return PermanentError(message, hint=hint)
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return PermanentError(f"{where} the server does not support a requested feature ({exc})",
                                  hint="Check notify.smtp_starttls and notify.smtp_username: the server offers "
                                       "neither STARTTLS nor AUTH on this port.")
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return TransientError(f"{where} connection closed unexpectedly")
        if isinstance(exc, ssl.SSLCertVerificationError):
            return PermanentError(f"{where} TLS certificate not trusted ({exc.verify_message})",
                                  hint="Install the mail server's CA certificate in the system trust store "
                                       "(or set SSL_CERT_FILE).")
        if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
            return TransientError(f"{where} TLS connection closed unexpectedly")
        if isinstance(exc, ssl.SSLError):
            return PermanentError(f"{where} TLS handshake failed ({exc.reason or type(exc).__name__})",
                                  hint="Check notify.smtp_ssl / notify.smtp_starttls match the port (465 = "
                                       "smtp_ssl, 587 = smtp_starttls, 25 = usually neither).")
        if isinstance(exc, smtplib.SMTPException):
            return PermanentError(f"{where} {type(exc).__name__}: {self._clean(str(exc))}",
                                  hint="Check the notify.smtp_* settings against what the mail server supports.")
        if isinstance(exc, TimeoutError):
            return TransientError(f"{where} timed out after {self.timeout:g} s")
        if isinstance(exc, OSError):
            return TransientError(f"{where} cannot connect: {exc.strerror or type(exc).__name__}")
        log.error("%s: unexpected error while sending", self.name, exc_info=exc)
        return PermanentError(f"{where} unexpected {type(exc).__name__}",
                              hint="An unexpected error in the mail sink; the worker log has the details.")
