"""Failure notifications: the Notifier protocol, the notification model and the webhook / SMTP sinks."""
from workers.notify.base import Notifier
from workers.notify.factory import build_notifiers
from workers.notify.render import Notification, notification_from_event
from workers.notify.smtp import SmtpNotifier
from workers.notify.webhook import JsonWebhook, SlackWebhook, TeamsWebhook

GenericWebhook = JsonWebhook

__all__ = ["GenericWebhook", "JsonWebhook", "Notification", "Notifier", "SlackWebhook", "SmtpNotifier",
           "TeamsWebhook", "build_notifiers", "notification_from_event"]
