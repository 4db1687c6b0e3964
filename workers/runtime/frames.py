"""A lean AMQP 0-9-1 receive path for deliveries, and pre-marshalled publish frames.

pika decodes every incoming frame into objects (a Method, a Header with its properties, a Body), runs each
through the channel's content assembler and trims its byte buffer after every frame (a copy of the rest of
the buffer each time). For a busy consumer that is most of its I/O thread. Here a Basic.Deliver whose
content header and body frames are all in the buffer is read straight from the bytes and handed to the
consumer callback; everything else (heartbeats, confirms, RPC replies, a delivery whose frames are
interleaved with others, an oversized body, an unknown consumer) goes through pika's own frame decoding
and dispatch, so behaviour outside the fast path is pika's.

On the way out, the Basic.Publish method frame of an (exchange, routing key) pair never changes: it is
marshalled once and reused; the header and body frames are packed directly.
"""
from __future__ import annotations

import struct

from pika import exceptions, frame, spec

from workers.runtime.properties import encode_properties, parse_properties

FRAME_END = spec.FRAME_END                    # 0xCE
_END = bytes((FRAME_END,))
_FRAME_HEAD = struct.Struct(">BHL")           # type, channel, payload size
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_CONTENT_HEAD = struct.Struct(">HHQ")         # class id, weight, body size
_CONTENT_PREFIX = struct.Struct(">BHLHHQ")    # a content header frame up to its property flags
_DELIVER = spec.Basic.Deliver.INDEX
_Deliver = spec.Basic.Deliver
_BASIC = spec.BasicProperties.INDEX
_METHOD, _HEADER, _BODY = spec.FRAME_METHOD, spec.FRAME_HEADER, spec.FRAME_BODY
WAIT_LIMIT = 128 * 1024  # bodies up to this size are awaited whole in the buffer (each read appends to it:
#                          bounded, like pika's own buffer for one frame); larger ones go through pika


def parse_deliver(buf: bytes, offset: int) -> spec.Basic.Deliver:
    """Basic.Deliver arguments starting at ``offset`` (just past the method id)."""
    tag_end = offset + 1 + buf[offset]
    exchange_at = tag_end + 9
    key_at = exchange_at + 1 + buf[exchange_at]
    key_end = key_at + 1 + buf[key_at]
    tag, exchange, key = buf[offset + 1:tag_end], buf[exchange_at + 1:key_at], buf[key_at + 1:key_end]
    try:
        tag, exchange, key = tag.decode(), exchange.decode(), key.decode()
    except UnicodeDecodeError:  # pika keeps a short string that is not UTF-8 as bytes
        tag, exchange, key = _text(tag), _text(exchange), _text(key)
    return _Deliver(tag, _U64.unpack_from(buf, tag_end)[0], bool(buf[tag_end + 8] & 1), exchange, key)


def _text(raw: bytes) -> str | bytes:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


INCOMPLETE = -1  # _delivery_span: the delivery's frames are not all in the buffer yet
GENERIC = 0      # _delivery_span: leave this delivery to pika


def _frame_at(buf: bytes, pos: int, kind: int, channel: int, min_len: int = 0) -> int:
    """The end of the whole frame of ``kind`` on ``channel`` (payload at least ``min_len``) at ``pos``;
    INCOMPLETE when it is not all in ``buf`` yet, GENERIC when it is another frame (or malformed: pika's path
    reports that)."""
    if pos + 7 > len(buf):
        return INCOMPLETE
    ftype, fchannel, flen = _FRAME_HEAD.unpack_from(buf, pos)
    if ftype != kind or fchannel != channel or flen < min_len:
        return GENERIC
    end = pos + 8 + flen
    if end > len(buf):
        return INCOMPLETE
    return end if buf[end - 1] == FRAME_END else GENERIC


def _delivery_span(buf: bytes, pos: int, method_end: int, channel: int) -> tuple[int, int, list]:
    """(end, frame count, body fragment spans) of a Deliver at ``pos`` whose header and body frames follow it
    contiguously on the same channel; end is INCOMPLETE when they may still arrive, GENERIC otherwise."""
    hpos = method_end
    hend = _frame_at(buf, hpos, _HEADER, channel, 14)
    if hend <= 0:                                   # INCOMPLETE or GENERIC
        return hend, 0, []
    class_id, _weight, body_size = _CONTENT_HEAD.unpack_from(buf, hpos + 7)
    if class_id != _BASIC or body_size > WAIT_LIMIT:
        return GENERIC, 0, []
    bpos, seen, spans = hend, 0, []
    while seen < body_size:
        bend = _frame_at(buf, bpos, _BODY, channel)
        if bend <= 0:
            return bend, 0, []
        spans.append((bpos + 7, bend - 1))
        seen += bend - bpos - 8
        bpos = bend
    if seen != body_size:  # too long: pika raises BodyTooLongError
        return GENERIC, 0, []
    return bpos, 2 + len(spans), spans


def on_data(conn, data_in: bytes) -> None:
    """``Connection._on_data_available`` with the delivery fast path (``conn`` a pika Connection)."""
    buf = conn._frame_buffer + data_in if conn._frame_buffer else data_in
    conn._frame_buffer = buf
    size, pos = len(buf), 0
    try:
        while pos < size:
            if size - pos < 8 or buf[pos] == 0x41:  # short, or b"AMQP": a protocol header
                consumed, value = frame.decode_frame(buf[pos:])
                if value is None:
                    break
                end = pos + consumed
            else:
                ftype, channel, length = _FRAME_HEAD.unpack_from(buf, pos)
                end = pos + 8 + length
                if end > size:
                    break
                if buf[end - 1] != FRAME_END:
                    raise exceptions.InvalidFrameError("Invalid FRAME_END marker")
                if ftype == _METHOD and length >= 4 and _U32.unpack_from(buf, pos + 7)[0] == _DELIVER:
                    msg_end, count, spans = _delivery_span(buf, pos, end, channel)
                    if msg_end == INCOMPLETE:
                        break
                    call = _delivery(conn, buf, pos, end, channel, spans) if msg_end != GENERIC else None
                    if call is not None:
                        # Past the delivery before the callback runs (pika, too, trims before it
                        # dispatches): an exception in the callback never replays it.
                        conn.bytes_received += msg_end - pos
                        conn.frames_received += count
                        pos = msg_end
                        call[0](*call[1])
                        if conn._frame_buffer is not buf:  # the connection was reset meanwhile
                            return
                        continue
                value = frame.decode_frame(buf[pos:end])[1]
            conn.bytes_received += end - pos
            pos = end
            conn._process_frame(value)
            if conn._frame_buffer is not buf:
                return
    finally:
        if conn._frame_buffer is buf:
            conn._frame_buffer = buf[pos:] if pos else buf


def _delivery(conn, buf: bytes, pos: int, method_end: int, channel_number: int, spans: list):
    """(consumer callback, its arguments) for one whole delivery, or None to leave it to pika (unknown
    channel or consumer, a cancelled consumer, or the channel's assembler is mid-message)."""
    channel = conn._channels.get(channel_number)
    if channel is None or channel._content_assembler._method_frame is not None:
        return None
    method = parse_deliver(buf, pos + 11)
    tag = method.consumer_tag
    callback = channel._consumers.get(tag)
    if callback is None or tag in channel._cancelled:
        return None
    props = parse_properties(buf, method_end + 19)
    if len(spans) == 1:
        body = buf[spans[0][0]:spans[0][1]]
    else:
        body = b"".join([buf[a:b] for a, b in spans])
    return callback, (channel, method, props, body)


def publish_frames(channel_number: int, exchange: str, routing_key: str, mandatory: bool) -> bytes:
    """The Basic.Publish method frame: the same bytes for every message to one (exchange, routing key)."""
    method = spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory)
    return frame.Method(channel_number, method).marshal()


def content_frames(pieces: list, channel_number: int, body: bytes, properties: spec.BasicProperties,
                   body_max: int) -> int:
    """Append the content header frame and the body frame(s) to ``pieces``; returns how many frames."""
    props = encode_properties(properties)
    length = len(body)
    pieces.append(_CONTENT_PREFIX.pack(_HEADER, channel_number, 12 + len(props), _BASIC, 0, length))
    pieces.append(props)
    pieces.append(_END)
    if length <= body_max:
        if length:
            pieces.append(_FRAME_HEAD.pack(_BODY, channel_number, length))
            pieces.append(body)
            pieces.append(_END)
            return 2
        return 1
    count = 1
    for start in range(0, length, body_max):
        chunk = body[start:start + body_max]
        pieces.append(_FRAME_HEAD.pack(_BODY, channel_number, len(chunk)))
        pieces.append(chunk)
        pieces.append(_END)
        count += 1
    return count
