"""Connection parameters and the message properties every event travels with."""
from __future__ import annotations

import pika

from contracts import Envelope
from workers.runtime.settings import BrokerSettings

PERSISTENT = pika.DeliveryMode.Persistent.value


def connection_parameters(broker: BrokerSettings) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        host=broker.host, port=broker.port, virtual_host=broker.vhost,
        credentials=pika.PlainCredentials(broker.username, broker.password.get_secret_value()),
        heartbeat=broker.heartbeat, blocked_connection_timeout=300, connection_attempts=1,
        client_properties={"connection_name": "appsvc-dr"},
    )


def event_properties(event: Envelope, headers: dict | None = None) -> pika.BasicProperties:
    """The properties an event travels with: persistent JSON, its id, type, schema version and backup set."""
    return pika.BasicProperties(
        content_type="application/json", delivery_mode=PERSISTENT, message_id=str(event.event_id),
        type=event.type, correlation_id=event.correlation_id, app_id=event.source[:255],
        timestamp=int(event.occurred_at.timestamp()), headers={"x-dr-version": event.version, **(headers or {})})
