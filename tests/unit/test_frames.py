"""The lean AMQP receive path and the pre-marshalled publish frames must give exactly what pika gives.

A real CoalescingConnection (never connected: its I/O loop never runs) with a real pika Channel: bytes go in
through ``_on_data_available`` in arbitrary chunks; deliveries must come out whole and in order, and whatever
is not a plain contiguous delivery must still reach pika's own frame handling.
"""
from __future__ import annotations

import struct
from unittest import mock

import pika
import pytest
from pika import exceptions, frame, spec
from pika.adapters.select_connection import IOLoop
from pika.channel import Channel

from workers.runtime import frames, properties
from workers.runtime.amqp import CoalescingConnection

FULL = pika.BasicProperties(
    content_type="application/json", content_encoding="gzip",
    headers={"x-dr-version": 1, "nested": {"a": [1, "two"]}, "flag": True, "none": None, "big": 2**40,
             "raw": b"\xff\x00bytes"},
    delivery_mode=2, priority=7, correlation_id="set-1", reply_to="amq.rabbitmq.reply-to", expiration="60000",
    message_id="a4f1c2d3-0000-4000-8000-000000000001", timestamp=1_700_000_000, type="test-ping",
    user_id="guest", app_id="bench", cluster_id="c1")
SPARSE = pika.BasicProperties(type="test-ping", headers={"x-dr-version": 1})
VARIANTS = [FULL, SPARSE, pika.BasicProperties(), pika.BasicProperties(message_id="ünïcode", app_id="x" * 255)]


@pytest.fixture
def conn():
    loop = IOLoop()
    c = CoalescingConnection(pika.ConnectionParameters(host="127.0.0.1", port=1), custom_ioloop=loop)
    c._body_max_length = 131072 - 8
    yield c
    loop.close()


def open_channel(conn, number: int = 1, tag: str = "ctag") -> tuple[Channel, list]:
    got: list = []
    ch = Channel(conn, number, lambda c: None)
    ch._state = ch.OPEN
    conn._channels[number] = ch
    ch._consumers[tag] = lambda channel, method, props, body: got.append((channel, method, props, body))
    return ch, got


def deliver_frames(tag: int, body: bytes, props=SPARSE, channel: int = 1, frame_max: int | None = None,
                   consumer: str = "ctag", routing_key: str = "test-ping") -> list[bytes]:
    method = spec.Basic.Deliver(consumer_tag=consumer, delivery_tag=tag, redelivered=tag % 2 == 0,
                                exchange="appsvc-dr", routing_key=routing_key)
    out = [frame.Method(channel, method).marshal(), frame.Header(channel, len(body), props).marshal()]
    step = frame_max or max(len(body), 1)
    out += [frame.Body(channel, body[i:i + step]).marshal() for i in range(0, len(body), step)]
    return out


def heartbeat() -> bytes:
    return frame.Heartbeat().marshal()


def check(got: list, expected: list[tuple[int, bytes]], props=SPARSE) -> None:
    assert [(m.delivery_tag, body) for _, m, _, body in got] == expected
    for _, method, p, _ in got:
        assert isinstance(method, spec.Basic.Deliver)
        assert (method.consumer_tag, method.exchange, method.routing_key) == ("ctag", "appsvc-dr", "test-ping")
        assert method.redelivered == (method.delivery_tag % 2 == 0)
        assert vars(p) == vars(props)


ALONE = [pika.BasicProperties(**{name: getattr(FULL, name)}) for name in vars(FULL)]


@pytest.mark.parametrize("props", VARIANTS + ALONE)
def test_properties_decode_and_encode_like_pika(props) -> None:
    encoded = b"".join(props.encode())
    assert properties.encode_properties(props) == encoded
    parsed = properties.parse_properties(b"junk" + encoded, 4)
    assert isinstance(parsed, spec.BasicProperties)
    assert vars(parsed) == vars(spec.BasicProperties().decode(encoded))


def test_cached_header_tables_are_never_shared_or_confused() -> None:
    encoded = b"".join(SPARSE.encode())
    first = properties.parse_properties(encoded, 0)
    first.headers["x-dr-attempt"] = 3  # a consumer changing its copy
    assert properties.parse_properties(encoded, 0).headers == {"x-dr-version": 1}
    for headers in ({"a": 1}, {"a": True}, {"a": 2**40}, {"a": "1"}, {"a": b"1"}, {"a": {"b": [1]}}, {"a": 1}):
        props = pika.BasicProperties(headers=headers)
        assert properties.encode_properties(props) == b"".join(props.encode())
        assert properties.parse_properties(properties.encode_properties(props), 0).headers == headers


def test_non_utf8_short_string_stays_bytes_as_in_pika() -> None:
    encoded = b"".join(pika.BasicProperties(message_id=b"\xff\xfe").encode())
    assert properties.parse_properties(encoded, 0).message_id == b"\xff\xfe"
    with pytest.raises(exceptions.ShortStringTooLong):
        properties.encode_properties(pika.BasicProperties(type="x" * 256))


def test_deliver_arguments_like_pika() -> None:
    for exchange, key in (("appsvc-dr", "test-ping"), ("", "ünï"), ("x", b"\xff\xfe")):
        method = spec.Basic.Deliver(consumer_tag="ctag", delivery_tag=2**40 + 3, redelivered=True,
                                    exchange=exchange, routing_key=key)
        encoded = frame.Method(1, method).marshal()
        assert vars(frames.parse_deliver(encoded, 11)) == vars(spec.Basic.Deliver().decode(encoded[11:-1]))


def test_whole_deliveries_in_one_read(conn) -> None:
    _, got = open_channel(conn)
    data = b"".join(f for i in range(1, 6) for f in deliver_frames(i, b'{"n": %d}' % i))
    with mock.patch.object(frame, "decode_frame", wraps=frame.decode_frame) as generic:
        conn._on_data_available(data)
    assert generic.call_count == 0  # the fast path took them all
    check(got, [(i, b'{"n": %d}' % i) for i in range(1, 6)])
    assert conn.bytes_received == len(data) and conn.frames_received == 15 and conn._frame_buffer == b""


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1000])
def test_any_split_of_the_stream(conn, chunk: int) -> None:
    _, got = open_channel(conn)
    bodies = [bytes([65 + i]) * (i * 37) for i in range(1, 8)]  # one of them empty-free, sizes vary
    data = b"".join(f for i, body in enumerate(bodies, 1) for f in deliver_frames(i, body, FULL))
    for start in range(0, len(data), chunk):
        conn._on_data_available(data[start:start + chunk])
    check(got, list(enumerate(bodies, 1)), FULL)
    assert conn.bytes_received == len(data) and conn._frame_buffer == b""


@pytest.mark.parametrize("chunk", [None, 5, 50])
def test_body_split_over_several_body_frames(conn, chunk) -> None:
    _, got = open_channel(conn)
    body = bytes(range(256)) * 3
    data = b"".join(deliver_frames(1, body, frame_max=100) + deliver_frames(2, b"after"))
    pieces = [data] if chunk is None else [data[i:i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        conn._on_data_available(piece)
    check(got, [(1, body), (2, b"after")])
    assert conn.frames_received == 2 + 8 + 3


def test_empty_body(conn) -> None:
    _, got = open_channel(conn)
    conn._on_data_available(b"".join(deliver_frames(1, b"") + deliver_frames(2, b"x")))
    check(got, [(1, b""), (2, b"x")])


def test_heartbeat_between_frames_goes_to_pika_and_the_delivery_still_arrives(conn) -> None:
    _, got = open_channel(conn)
    conn._heartbeat_checker = mock.Mock()
    method, header, body = deliver_frames(1, b"one")
    data = method + heartbeat() + header + heartbeat() + body + heartbeat() + b"".join(deliver_frames(2, b"two"))
    conn._on_data_available(data)
    check(got, [(1, b"one"), (2, b"two")])
    assert conn._heartbeat_checker.received.call_count == 3
    assert conn.bytes_received == len(data) and conn.frames_received == 3 + 3 + 3


def test_heartbeat_between_body_frames_split_across_reads(conn) -> None:
    _, got = open_channel(conn)
    conn._heartbeat_checker = mock.Mock()
    method, header, body1, body2 = deliver_frames(1, b"one", frame_max=2)  # body frames "on" and "e"
    conn._on_data_available(method + header[:5])
    conn._on_data_available(header[5:] + body1 + heartbeat() + body2[:3])
    assert got == [] and conn._heartbeat_checker.received.call_count == 1
    conn._on_data_available(body2[3:])
    check(got, [(1, b"one")])
    assert conn._frame_buffer == b""


def test_frames_of_another_channel_interleaved(conn) -> None:
    _, got1 = open_channel(conn, 1)
    _, got2 = open_channel(conn, 2)
    a, b = deliver_frames(1, b"on one", channel=1), deliver_frames(7, b"on two", channel=2)
    conn._on_data_available(b"".join([a[0], b[0], a[1], b[1], a[2], b[2]]))
    check(got1, [(1, b"on one")])
    check(got2, [(7, b"on two")])


def test_other_methods_reach_pika_callbacks(conn) -> None:
    _, got = open_channel(conn)
    confirms: list = []
    conn.callbacks.add(1, spec.Basic.Ack, confirms.append, one_shot=False)
    ack = frame.Method(1, spec.Basic.Ack(delivery_tag=5, multiple=True)).marshal()
    conn._on_data_available(b"".join(deliver_frames(1, b"x")) + ack + b"".join(deliver_frames(2, b"y")))
    check(got, [(1, b"x"), (2, b"y")])
    assert [c.method.delivery_tag for c in confirms] == [5]


def test_unknown_or_cancelled_consumer_is_left_to_pika(conn) -> None:
    ch, got = open_channel(conn)
    with mock.patch.object(ch, "basic_reject") as reject:
        conn._on_data_available(b"".join(deliver_frames(1, b"x", consumer="nobody")))
        ch._cancelled.add("ctag")
        conn._on_data_available(b"".join(deliver_frames(2, b"y")))
    assert got == []
    reject.assert_called_once_with(2)


def test_oversized_body_goes_through_pika(conn, monkeypatch) -> None:
    monkeypatch.setattr(frames, "WAIT_LIMIT", 10)
    _, got = open_channel(conn)
    body = b"z" * 50
    data = b"".join(deliver_frames(1, body, frame_max=20) + deliver_frames(2, b"small"))
    for i in range(0, len(data), 13):
        conn._on_data_available(data[i:i + 13])
    check(got, [(1, body), (2, b"small")])


def test_bad_frame_end_raises(conn) -> None:
    open_channel(conn)
    data = bytearray(b"".join(deliver_frames(1, b"x")))
    data[-1] = 0
    with pytest.raises(exceptions.InvalidFrameError):
        conn._on_data_available(bytes(data))


def test_a_failing_callback_does_not_replay_the_delivery(conn) -> None:
    ch, got = open_channel(conn)
    calls: list = []

    def boom(channel, method, props, body):
        calls.append(method.delivery_tag)
        if len(calls) == 1:
            raise RuntimeError("handler bug")
    ch._consumers["ctag"] = boom
    data = b"".join(deliver_frames(1, b"x") + deliver_frames(2, b"y"))
    with pytest.raises(RuntimeError):
        conn._on_data_available(data)
    conn._on_data_available(b"")
    assert calls == [1, 2]


def test_connection_reset_during_a_callback_stops_reading(conn) -> None:
    ch, got = open_channel(conn)

    def reset(channel, method, props, body):
        got.append(method.delivery_tag)
        conn._frame_buffer = bytes()  # what pika does when the connection is torn down
    ch._consumers["ctag"] = reset
    conn._on_data_available(b"".join(deliver_frames(1, b"x") + deliver_frames(2, b"y")))
    assert got == [1] and conn._frame_buffer == b""


@pytest.mark.parametrize("size", [0, 10, 1000, 2500])
def test_publish_frames_match_pika(conn, size: int) -> None:
    ch, _ = open_channel(conn)
    conn._body_max_length = 1000
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    conn.publish(ch, "appsvc-dr", "test-pong", body, FULL, mandatory=True)
    conn.publish(ch, "appsvc-dr", "test-pong", body, SPARSE, mandatory=True)  # the cached method frame
    ours = b"".join(conn._outbox)
    method = frame.Method(1, spec.Basic.Publish(exchange="appsvc-dr", routing_key="test-pong", mandatory=True))
    expected = b""
    for props in (FULL, SPARSE):
        expected += method.marshal() + frame.Header(1, size, props).marshal()
        expected += b"".join(frame.Body(1, body[i:i + 1000]).marshal() for i in range(0, size, 1000))
    assert ours == expected
    assert conn.bytes_sent == len(expected)
    assert conn.frames_sent == 2 * (2 + (size + 999) // 1000)


def test_publish_on_a_closed_channel_raises(conn) -> None:
    ch, _ = open_channel(conn)
    ch._state = ch.CLOSED
    with pytest.raises(exceptions.ChannelWrongStateError):
        conn.publish(ch, "", "q", b"x", SPARSE)
    assert conn._outbox == []


def test_frame_header_struct_sizes() -> None:
    assert struct.calcsize(">BHLHHQ") == 7 + 12


def test_event_properties_are_what_basic_properties_would_be() -> None:
    from tests.integration.sample_workers import Ping, PingPayload
    from workers.runtime.amqp import event_properties
    event = Ping(source="s" * 200, stamp="stamp1", correlation_id="set-1", payload=PingPayload(n=1))
    for extra in (None, {}, {"x-dr-attempt": 2, "x-dr-version": 9}):
        expected = pika.BasicProperties(
            content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent,
            message_id=str(event.event_id), type="test-ping", correlation_id="set-1", app_id="s" * 200,
            timestamp=int(event.occurred_at.timestamp()), headers={"x-dr-version": 1, **(extra or {})})
        props = event_properties(event, extra)
        assert type(props) is spec.BasicProperties and vars(props) == vars(expected)
        assert properties.encode_properties(props) == b"".join(expected.encode())
