"""Build the configured notification sinks from :class:`~workers.senders.settings.NotifySettings`."""
from __future__ import annotations

from workers.senders.base import Notifier
from workers.senders.settings import NotifySettings
from workers.senders.smtp import SmtpNotifier
from workers.senders.webhook import JsonWebhook, SlackWebhook, TeamsWebhook
from workers.runtime.errors import ConfigurationError


def build_notifiers(settings: NotifySettings) -> list[Notifier]:
    """One sink per configured webhook URL, plus one SMTP sink if ``smtp_host`` is set.

    Raises ConfigurationError (naming the setting, never its secret value) for an unusable configuration, so
    the notifier worker refuses to start instead of failing on the first notification.
    """
    notifiers: list[Notifier] = []
    for kind, urls, setting in ((JsonWebhook, settings.webhook_urls, "notify.webhook_urls"),
                                (TeamsWebhook, settings.teams_urls, "notify.teams_urls"),
                                (SlackWebhook, settings.slack_urls, "notify.slack_urls")):
        for index, url in enumerate(urls, start=1):
            notifiers.append(kind(url.get_secret_value(), index=index, setting=setting, timeout=settings.timeout,
                                  allow_http=settings.allow_http_webhooks))
    if settings.smtp_host:
        notifiers.append(_smtp(settings))
    return notifiers


def _smtp(settings: NotifySettings) -> SmtpNotifier:
    if not settings.smtp_to:
        raise ConfigurationError("notify.smtp_host is set but notify.smtp_to lists no recipients",
                                 hint="Set APPSVC_DR_NOTIFY__SMTP_TO (a JSON list, e.g. '[\"ops@example.org\"]') "
                                      "or unset notify.smtp_host.")
    if settings.smtp_ssl and settings.smtp_starttls:
        raise ConfigurationError("notify.smtp_ssl and notify.smtp_starttls are both set",
                                 hint="Use smtp_ssl for implicit TLS (port 465) or smtp_starttls (port 587), "
                                      "not both.")
    if settings.smtp_password is not None and not settings.smtp_username:
        raise ConfigurationError("notify.smtp_password is set but notify.smtp_username is not",
                                 hint="Set APPSVC_DR_NOTIFY__SMTP_USERNAME too, or remove the password.")
    if not 1 <= settings.smtp_port <= 65535:
        raise ConfigurationError(f"notify.smtp_port {settings.smtp_port} is not a TCP port (1-65535)")
    return SmtpNotifier(settings.smtp_host or "", settings.smtp_port, sender=settings.smtp_from,
                        recipients=list(settings.smtp_to), username=settings.smtp_username,
                        password=settings.smtp_password, starttls=settings.smtp_starttls,
                        use_ssl=settings.smtp_ssl, timeout=settings.timeout,
                        allow_plaintext_auth=settings.smtp_allow_plaintext_auth)
