"""Webhook sinks over stdlib HTTP: a generic JSON POST, Microsoft Teams (Adaptive Card) and Slack/Mattermost.

All three POST ``application/json`` and classify failures the same way: connection errors, timeouts, 408, 429
and 5xx are transient; other 4xx and redirects are permanent. Messages name the sink and the host only — the
URL's path and query hold the webhook's token.
"""
from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.error
import urllib.request
from email.message import Message
from typing import Any

from workers.senders.base import checked_url, scrub, secret_fragments, url_host
from workers.senders.render import Notification
from workers.runtime.errors import PermanentError, TransientError

USER_AGENT = "appservice-dr-notifier/1"
TRANSIENT_STATUS = {408, 425, 429}


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirected POST would be replayed as GET without its body: treat redirects as errors instead."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


_OPENER = urllib.request.build_opener(_NoRedirects())


def _retry_after(headers: Message | None) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: leave the delay to the caller's backoff


class JsonWebhook:
    """A generic webhook: POSTs :meth:`Notification.to_dict` as JSON (the job-failed fields plus title/text)."""

    kind = "webhook"

    def __init__(self, url: str, *, index: int = 1, setting: str = "notify.webhook_urls",
                 timeout: float = 10.0, allow_http: bool = False) -> None:
        self._url = checked_url(url, f"{setting}[{index - 1}]", allow_http=allow_http)
        self._setting = f"{setting}[{index - 1}]"
        self._env = "APPSVC_DR_" + setting.upper().replace(".", "__")
        self._secrets = secret_fragments(url)
        self.timeout = timeout
        self.name = f"{self.kind}#{index} (host {url_host(url)})"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    def payload(self, notification: Notification) -> dict[str, Any]:
        return notification.to_dict()

    def send(self, notification: Notification) -> None:
        body = json.dumps(self.payload(notification), ensure_ascii=False).encode("utf-8")
        request = urllib.request.Request(self._url, data=body, method="POST", headers={
            "Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT})
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            error = self._http_error(exc)
        except urllib.error.URLError as exc:
            error = self._connection_error(exc.reason)
        except (OSError, http.client.HTTPException) as exc:  # timeouts while reading, resets, protocol errors
            error = self._connection_error(exc)
        else:
            return
        raise error from None  # the original exception holds the URL: keep it out of tracebacks

    def _http_error(self, exc: urllib.error.HTTPError) -> Exception:
        status, reason = exc.code, exc.reason
        try:
            detail = exc.read(300).decode("utf-8", "replace").strip()
        except Exception:  # noqa: BLE001 - the body is only a nicety
            detail = ""
        finally:
            exc.close()
        detail = scrub(" ".join(detail.split())[:200], self._secrets)
        message = f"{self.name}: HTTP {status} {reason}" + (f" ({detail})" if detail else "")
        if status >= 500 or status in TRANSIENT_STATUS:
            return TransientError(message, delay=_retry_after(exc.headers))
        if 300 <= status < 400:
            return PermanentError(message, hint=f"The webhook URL redirects; put the final URL in {self._setting}.")
        if status in (401, 403, 404, 410):
            hint = (f"The webhook URL is wrong, expired or was revoked: create a new incoming webhook and put its "
                    f"URL in {self._setting} ({self._env}).")
        else:
            hint = f"The {self.kind} server rejected the request; check {self._setting} points at a {self.kind} URL."
        return PermanentError(message, hint=hint)

    def _connection_error(self, reason: object) -> Exception:
        if isinstance(reason, ssl.SSLCertVerificationError):
            return PermanentError(f"{self.name}: TLS certificate not trusted ({reason.verify_message})",
                                  hint="Install the server's CA certificate in the system trust store "
                                       "(or set SSL_CERT_FILE).")
        if isinstance(reason, (TimeoutError, socket.timeout)):
            what = f"timed out after {self.timeout:g} s"
        elif isinstance(reason, socket.gaierror):
            what = f"cannot resolve host ({reason.strerror})"
        elif isinstance(reason, OSError) and reason.strerror:
            what = reason.strerror
        else:
            what = type(reason).__name__
        return TransientError(f"{self.name}: cannot deliver: {what}")


class TeamsWebhook(JsonWebhook):
    """Microsoft Teams incoming webhook / Workflows: a message with one Adaptive Card (title, text, facts)."""

    kind = "teams"

    def __init__(self, url: str, *, index: int = 1, setting: str = "notify.teams_urls", timeout: float = 10.0,
                 allow_http: bool = False):
        super().__init__(url, index=index, setting=setting, timeout=timeout, allow_http=allow_http)

    def payload(self, notification: Notification) -> dict[str, Any]:
        n = notification
        color = "Attention" if n.severity == "error" else "Warning"
        body: list[dict[str, Any]] = [
            {"type": "TextBlock", "text": n.title, "weight": "Bolder", "size": "Medium", "color": color,
             "wrap": True},
            {"type": "TextBlock", "text": f"**What failed:** {n.message}", "wrap": True},
            {"type": "TextBlock", "text": f"**How to fix:** {n.hint}", "wrap": True, "color": color},
        ]
        if n.replay_command:
            body.append({"type": "TextBlock", "text": f"After fixing, replay it: `{n.replay_command}`",
                         "wrap": True, "fontType": "Monospace"})
        if n.repeat_line:
            body.append({"type": "TextBlock", "text": n.repeat_line, "wrap": True, "isSubtle": True})
        body.append({"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in n.facts()]})
        card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                "version": "1.4", "msteams": {"width": "Full"}, "body": body}
        return {"type": "message", "summary": n.title, "text": n.summary,
                "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
                                 "content": card}]}


class SlackWebhook(JsonWebhook):
    """Slack (or Mattermost) incoming webhook: ``text`` for notifications and clients without blocks, plus blocks."""

    kind = "slack"

    def __init__(self, url: str, *, index: int = 1, setting: str = "notify.slack_urls", timeout: float = 10.0,
                 allow_http: bool = False):
        super().__init__(url, index=index, setting=setting, timeout=timeout, allow_http=allow_http)

    def payload(self, notification: Notification) -> dict[str, Any]:
        n = notification
        icon = ":red_circle:" if n.severity == "error" else ":warning:"
        text = f"*What failed:* {n.message}\n*How to fix:* {n.hint}"
        if n.replay_command:
            text += f"\nAfter fixing, replay it: `{n.replay_command}`"
        if n.repeat_line:
            text += f"\n_{n.repeat_line}_"
        fields = [{"type": "mrkdwn", "text": f"*{k}*\n{v}"[:2000]} for k, v in n.facts()[:10]]
        blocks = [
            {"type": "header", "text": {"type": "plain_text", "text": n.title[:150], "emoji": True}},
            {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}},
            {"type": "section", "fields": fields},
        ]
        return {"text": f"{icon} {n.title}\n{text}"[:4000], "blocks": blocks}
