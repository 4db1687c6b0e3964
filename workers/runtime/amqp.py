"""Connection parameters and the message properties every event travels with."""
from __future__ import annotations

import pika

from contracts import Envelope
from workers.runtime import frames
from workers.runtime.config import BrokerSettings

PERSISTENT = pika.DeliveryMode.Persistent.value  # the int: BasicProperties unwraps the enum on every message
_CONTENT_FRAMES = (pika.spec.FRAME_HEADER, pika.spec.FRAME_BODY)


def connection_parameters(broker: BrokerSettings) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        host=broker.host, port=broker.port, virtual_host=broker.vhost,
        credentials=pika.PlainCredentials(broker.username, broker.password.get_secret_value()),
        heartbeat=broker.heartbeat, blocked_connection_timeout=300, connection_attempts=1,
        client_properties={"connection_name": "appsvc-dr"},
    )


_PROPERTIES = pika.BasicProperties
_new_properties = _PROPERTIES.__new__
_EVENT_DEFAULTS = {name: None for name in vars(pika.BasicProperties())}
_EVENT_DEFAULTS.update(content_type="application/json", delivery_mode=PERSISTENT)


def event_properties(event: Envelope, headers: dict | None = None) -> pika.BasicProperties:
    """The properties an event travels with (built without ``BasicProperties.__init__``: one per message)."""
    d = _EVENT_DEFAULTS.copy()
    d["headers"] = {"x-dr-version": event.version, **headers} if headers else {"x-dr-version": event.version}
    d["correlation_id"] = event.correlation_id
    d["message_id"] = str(event.event_id)
    d["timestamp"] = int(event.occurred_at.timestamp())
    d["type"] = event.type
    d["app_id"] = event.source[:255]
    p = _new_properties(_PROPERTIES)
    p.__dict__ = d
    return p


class CoalescingConnection(pika.SelectConnection):
    """A SelectConnection that sends everything written during one I/O-loop pass in one ``send``.

    pika hands the transport every frame separately (a publish is three frames, an ack one) and the transport
    sends each buffer with its own system call, so a busy worker spends most of its I/O thread in ``send``
    and wakes the broker once per frame. Here frames are collected and flushed once per loop pass, still in
    order, before the loop polls again.
    """

    def __init__(self, *args, **kwargs) -> None:
        self._outbox: list[bytes] = []
        self._publish_methods: dict[tuple, bytes] = {}
        super().__init__(*args, **kwargs)

    def _adapter_emit_data(self, data: bytes) -> None:
        if not self._outbox:
            self._nbio.call_later(0, self._flush_outbox)
        self._outbox.append(data)

    def _on_data_available(self, data_in: bytes) -> None:
        """Whole deliveries are read straight from the bytes (see :mod:`workers.runtime.frames`)."""
        frames.on_data(self, data_in)

    def publish(self, channel, exchange: str, routing_key: str, body: bytes, properties: pika.BasicProperties,
                mandatory: bool = False) -> None:
        """``channel.basic_publish`` with the method frame marshalled once per (exchange, routing key)."""
        channel._raise_if_not_open()
        number = channel.channel_number
        key = (number, exchange, routing_key, mandatory)
        method = self._publish_methods.get(key)
        if method is None:
            if len(self._publish_methods) >= 1024:
                self._publish_methods.clear()
            method = self._publish_methods[key] = frames.publish_frames(number, exchange, routing_key, mandatory)
        pieces = [method]
        self.frames_sent += 1 + frames.content_frames(
            pieces, number, body if isinstance(body, bytes) else pika.compat.as_bytes(body), properties,
            self._body_max_length)
        self.bytes_sent += sum(map(len, pieces))
        if not self._outbox:
            self._nbio.call_later(0, self._flush_outbox)
        self._outbox += pieces

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
