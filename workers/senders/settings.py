"""The notification senders' settings section (``APPSVC_DR_NOTIFY__<FIELD>``): webhooks, SMTP, and how the
notifier groups repeats. Webhook URLs and the SMTP password are ``SecretStr`` (print as ``**********``)."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr


class NotifySettings(BaseModel, extra="forbid"):
    webhook_urls: list[SecretStr] = Field(default=[], description="Generic JSON webhooks")
    teams_urls: list[SecretStr] = Field(default=[], description="Microsoft Teams incoming webhooks")
    slack_urls: list[SecretStr] = Field(default=[], description="Slack (or Mattermost) incoming webhooks")
    allow_http_webhooks: bool = Field(default=False, description="Accept http:// webhook URLs (token and "
                                      "notifications then cross the network unencrypted); off: refused at start-up")
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "appservice-dr@localhost"
    smtp_to: list[str] = []
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    smtp_allow_plaintext_auth: bool = Field(default=False, description="Allow the SMTP login without STARTTLS or "
                                            "implicit TLS (it then crosses the network readable); off: refused at "
                                            "start-up")
    timeout: float = Field(default=10.0, gt=0)
    group_window: float = Field(default=900.0, ge=0, description="Seconds in which identical failures are "
                                                                 "grouped into one notification")
    pending_file: Path | None = Field(default=None, description="Where suppressed repeats and undelivered "
                                      "summaries are kept, so a restarted notifier still reports them (unset: in "
                                      "memory only)")
