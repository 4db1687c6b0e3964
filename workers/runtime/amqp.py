"""Connection parameters and the message properties every event travels with."""
from __future__ import annotations

import pika

from contracts import Envelope
from workers.runtime.config import BrokerSettings

PERSISTENT = pika.DeliveryMode.Persistent
_CONTENT_FRAMES = (pika.spec.FRAME_HEADER, pika.spec.FRAME_BODY)


def connection_parameters(broker: BrokerSettings) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        host=broker.host, port=broker.port, virtual_host=broker.vhost,
        credentials=pika.PlainCredentials(broker.username, broker.password.get_secret_value()),
        heartbeat=broker.heartbeat, blocked_connection_timeout=300, connection_attempts=1,
        client_properties={"connection_name": "appsvc-dr"},
    )


def event_properties(event: Envelope, headers: dict | None = None) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type="application/json", delivery_mode=PERSISTENT, message_id=str(event.event_id),
        type=event.type, correlation_id=event.correlation_id, app_id=event.source[:255],
        timestamp=int(event.occurred_at.timestamp()), headers={"x-dr-version": event.version, **(headers or {})},
    )


class CoalescingConnection(pika.SelectConnection):
    """A SelectConnection that sends everything written during one I/O-loop pass in one ``send``.

    pika hands the transport every frame separately (a publish is three frames, an ack one) and the transport
    sends each buffer with its own system call, so a busy worker spends most of its I/O thread in ``send``
    and wakes the broker once per frame. Here frames are collected and flushed once per loop pass, still in
    order, before the loop polls again.
    """

    def __init__(self, *args, **kwargs) -> None:
        self._outbox: list[bytes] = []
        super().__init__(*args, **kwargs)

    def _adapter_emit_data(self, data: bytes) -> None:
        if not self._outbox:
            self._nbio.call_later(0, self._flush_outbox)
        self._outbox.append(data)

    def _process_frame(self, frame_value) -> None:
        """Deliveries go straight to their channel. pika first looks for a connection-level callback
        registered for every incoming frame; none is ever registered for Basic.Deliver or content frames (RPC
        replies and confirms are), and that lookup is a visible share of a busy consumer's CPU."""
        if frame_value.frame_type in _CONTENT_FRAMES or isinstance(getattr(frame_value, "method", None),
                                                                   pika.spec.Basic.Deliver):
            self.frames_received += 1
            self._deliver_frame_to_channel(frame_value)
        else:
            super()._process_frame(frame_value)

    def _flush_outbox(self) -> None:
        data, self._outbox = b"".join(self._outbox), []
        if data and self._transport is not None:
            super()._adapter_emit_data(data)
