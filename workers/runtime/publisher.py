"""Producer side: persistent, mandatory messages with publisher confirms; reconnects and retries."""
from __future__ import annotations

import logging
import time

import pika
from pika import exceptions as pex

from contracts import Envelope
from workers.runtime.amqp import connection_parameters, event_properties
from workers.runtime.connect import CONNECTION_ERRORS
from workers.runtime.errors import PermanentError, TransientError
from workers.runtime.settings import BrokerSettings

log = logging.getLogger("appsvc_dr.publisher")


class Publisher:
    """Publishes events to the exchange. ``publish`` returns only once the broker confirmed the message.

    A lost connection is re-opened and the message sent again (at-least-once), for up to ``retry_for``
    seconds. An event no queue is bound for is a :class:`PermanentError`, never silently dropped.
    """

    def __init__(self, broker: BrokerSettings, *, retry_for: float = 120.0) -> None:
        self.broker, self.retry_for = broker, retry_for
        self._conn: pika.BlockingConnection | None = None
        self._ch = None

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _channel(self):
        if self._ch is None or not self._ch.is_open:
            self.close()
            self._conn = pika.BlockingConnection(connection_parameters(self.broker))
            self._ch = self._conn.channel()
            self._ch.confirm_delivery()
        return self._ch

    def close(self) -> None:
        conn, self._conn, self._ch = self._conn, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

    def publish(self, event: Envelope) -> None:
        self.publish_raw(self.broker.exchange, event.routing_key, event.to_json(), event_properties(event))

    def publish_raw(self, exchange: str, routing_key: str, body: bytes, properties: pika.BasicProperties) -> None:
        deadline, delay = time.monotonic() + self.retry_for, 0.2
        while True:
            try:
                self._channel().basic_publish(exchange, routing_key, body, properties, mandatory=True)
                return
            except pex.UnroutableError:
                raise PermanentError(f"no queue is bound for {routing_key!r} on exchange {exchange!r}",
                                     hint="Declare the topology (`appsvc-dr topology declare`) or start the "
                                          "worker that consumes this event type.") from None
            except pex.NackError:
                err: Exception = TransientError(f"broker refused {routing_key!r} (nack); queue full?")
            except (pex.ProbableAuthenticationError, pex.ProbableAccessDeniedError) as exc:
                raise PermanentError(f"RabbitMQ refused the login: {type(exc).__name__}",
                                     hint="Check APPSVC_DR_BROKER__USERNAME / PASSWORD / VHOST.") from None
            except CONNECTION_ERRORS as exc:
                err = exc
                self.close()
            if time.monotonic() >= deadline:
                raise TransientError(f"could not publish {routing_key!r} within {self.retry_for:g}s: "
                                     f"{type(err).__name__}", hint="Is RabbitMQ up? Check APPSVC_DR_BROKER__*.")
            log.warning("publish of %s failed (%s); retrying in %.1fs", routing_key, type(err).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
