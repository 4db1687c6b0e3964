"""The Notifier interface every sink implements, plus helpers that keep secrets out of names and errors.

A sink classifies its own failures where they happen: :class:`~workers.runtime.errors.TransientError` for
connection errors, timeouts, HTTP 5xx/429 and SMTP 4xx; :class:`~workers.runtime.errors.PermanentError` for
everything a retry cannot fix (HTTP 4xx, rejected login, refused recipients), with a hint naming the setting
to check. Webhook URLs carry tokens in their path or query, so names and messages show only the host.
"""
from __future__ import annotations

import re
from typing import Iterable, Protocol, runtime_checkable
from urllib.parse import urlsplit

from workers.senders.render import Notification
from workers.runtime.errors import ConfigurationError

REDACTED = "***"


@runtime_checkable
class Notifier(Protocol):
    """Delivers a :class:`Notification` somewhere. ``name`` identifies the sink in logs and never holds secrets."""

    name: str

    def send(self, notification: Notification) -> None:
        """Deliver it or raise TransientError / PermanentError (messages never contain secrets)."""
        ...


def checked_url(url: str, setting: str, *, allow_http: bool = False) -> str:
    """Validate a webhook URL at start-up; the error names the setting, never the URL (it holds a token).

    ``http://`` is refused unless ``allow_http``: the URL's token and the failure details would cross the
    network readable (and alterable) by anyone on the path.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ConfigurationError(f"{setting} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{setting} must be an http:// or https:// URL with a host name",
                                 hint=f"Copy the full incoming-webhook URL into {setting}.")
    if parts.scheme == "http" and not allow_http:
        raise ConfigurationError(f"{setting} is an http:// URL: its token and every notification would cross "
                                 "the network unencrypted",
                                 hint=f"Use the webhook's https:// URL in {setting}. Only on a trusted network, "
                                      "to send over plain HTTP anyway, set APPSVC_DR_NOTIFY__ALLOW_HTTP_WEBHOOKS=true.")
    return url


def url_host(url: str) -> str:
    """``host`` or ``host:port`` of a URL: safe to log (no user info, path or query)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


def secret_fragments(url: str) -> list[str]:
    """Pieces of a URL that may be secret (user info, path segments, query values), longest first."""
    parts = urlsplit(url)
    pieces = re.split(r"[/?&=;:@]", f"{parts.username or ''}:{parts.password or ''}@{parts.path}?{parts.query}")
    return sorted({p for p in pieces if len(p) >= 4}, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***`` (for server responses that might echo a token)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text
