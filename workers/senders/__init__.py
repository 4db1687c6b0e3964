"""Failure notifications: the Notifier protocol, the notification model and the webhook / SMTP sinks."""
from workers.senders.base import Notifier
from workers.senders.factory import build_notifiers
from workers.senders.render import Notification, notification_from_event
from workers.senders.smtp import SmtpNotifier
from workers.senders.webhook import JsonWebhook, SlackWebhook, TeamsWebhook

GenericWebhook = JsonWebhook

__all__ = ["GenericWebhook", "JsonWebhook", "Notification", "Notifier", "SlackWebhook", "SmtpNotifier",
           "TeamsWebhook", "build_notifiers", "notification_from_event"]
