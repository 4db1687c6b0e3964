"""AMQP Basic content-header properties to and from bytes, exactly as pika's ``BasicProperties`` does it.

pika's own ``decode``/``encode`` test every field and go through a helper call per field (and
``BasicProperties.__init__``); these run once per delivery and once per published message. Decoding runs
code generated once per flag word (what a producer sends is the same every time), encoding code generated
once from the same field table (one "present?" test per field), and the short strings and header tables
that repeat from message to message (content type, event type, app id, ``{"x-dr-version": 1}``) are encoded
or decoded once and cached.
"""
from __future__ import annotations

import struct

from pika import exceptions, spec
from pika.data import decode_table, encode_table

Properties = spec.BasicProperties
_new_properties = Properties.__new__
_U16, _U32, _U64, _BYTE = struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q"), struct.Struct("B")



# (attribute, kind) in wire order; kinds: s short string, t table, o octet, q 64-bit timestamp
FIELDS = (("content_type", "s"), ("content_encoding", "s"), ("headers", "t"), ("delivery_mode", "o"),
          ("priority", "o"), ("correlation_id", "s"), ("reply_to", "s"), ("expiration", "s"), ("message_id", "s"),
          ("timestamp", "q"), ("type", "s"), ("user_id", "s"), ("app_id", "s"), ("cluster_id", "s"))
_READ = {
    "s": ("end = pos + 1 + buf[pos]\nraw = buf[pos + 1:end]\npos = end\n"
          "try:\n    {name} = raw.decode()\nexcept UnicodeDecodeError:  # pika keeps it as bytes\n    {name} = raw\n"),
    "t": "{name}, pos = _decode_headers(buf, pos)\n",
    "o": "{name} = buf[pos]\npos += 1\n",
    "q": "{name} = _U64.unpack_from(buf, pos)[0]\npos += 8\n",
}
_PARSERS: dict = {}  # flag word -> parser made for exactly the fields it announces


def parse_properties(buf: bytes, offset: int) -> spec.BasicProperties:
    """The properties whose flag word starts at ``offset``, as ``BasicProperties().decode`` gives them."""
    flags = buf[offset] << 8 | buf[offset + 1]
    parser = _PARSERS.get(flags)
    if parser is None:
        if flags & 1:  # a continuation flag word: never sent for Basic, but let pika cope
            return Properties().decode(buf, offset)
        if len(_PARSERS) >= 256:  # only a producer sending every combination could get here
            _PARSERS.clear()
        parser = _PARSERS[flags] = _parser_for(flags)
    return parser(buf, offset + 2)


def _parser_for(flags: int):
    """Straight-line code for one flag word: no test per field, and one ``__dict__.update`` at the end.
    Messages from one producer all carry the same flag word, so there are few of these."""
    body = "".join(_READ[kind].format(name=name) for name, kind in FIELDS
                   if flags & getattr(Properties, "FLAG_" + name.upper()))
    present = {name for name, kind in FIELDS if flags & getattr(Properties, "FLAG_" + name.upper())}
    values = ", ".join(f"{name}={name if name in present else None}" for name, _ in FIELDS)
    source = ("def parse(buf, pos):\n" + "".join(f"    {line}\n" for line in body.splitlines())
              + f"    p = _new(Properties)\n    p.__dict__.update({values})\n    return p\n")
    namespace = {"_new": _new_properties, "Properties": Properties, "_decode_headers": _decode_headers,
                 "_U64": _U64}
    exec(compile(source, f"<properties parser {flags:#06x}>", "exec"), namespace)  # noqa: S102 - our own text
    return namespace["parse"]


# Encoded short strings and header tables repeat from message to message (content type, event type, app id,
# {"x-dr-version": 1}); each cache is emptied when full, so one-off values cannot crowd out the usual ones.
CACHE_MAX = 1024
_SHORT: dict = {}         # str -> its encoded short string
_TABLES_IN: dict = {}     # encoded table -> decoded (scalar values only: callers get a copy)
_TABLES_OUT: dict = {}    # (keys, value types, values) -> encoded table; the types keep 1, True and 1.0 apart


def _short(value) -> bytes:
    """A short string's bytes (length octet + UTF-8), remembered."""
    encoded = _short_string(value)
    if isinstance(value, str):
        if len(_SHORT) >= CACHE_MAX:
            _SHORT.clear()
        _SHORT[value] = encoded
    return encoded


def _decode_headers(buf: bytes, pos: int) -> tuple[dict, int]:
    end = pos + 4 + _U32.unpack_from(buf, pos)[0]
    raw = buf[pos:end]
    table = _TABLES_IN.get(raw)
    if table is not None:
        return dict(table), end
    table, end = decode_table(buf, pos)
    if not any(type(v) in (dict, list) for v in table.values()):  # nothing mutable inside: a copy is safe
        if len(_TABLES_IN) >= CACHE_MAX:
            _TABLES_IN.clear()
        _TABLES_IN[raw] = dict(table)
    return table, end


def _encode_headers(pieces: list, headers: dict) -> None:
    values = tuple(headers.values())
    key = (tuple(headers), tuple(map(type, values)), values)
    try:
        encoded = _TABLES_OUT.get(key)
    except TypeError:  # a nested table or a list inside: not hashable, never cached
        encode_table(pieces, headers)
        return
    if encoded is None:
        parts: list = []
        encode_table(parts, headers)
        encoded = b"".join(parts)
        if len(_TABLES_OUT) >= CACHE_MAX:
            _TABLES_OUT.clear()
        _TABLES_OUT[key] = encoded
    pieces.append(encoded)


def _short_string(value) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    if len(raw) > 255:
        raise exceptions.ShortStringTooLong(raw)
    return bytes((len(raw),)) + raw


def encode_properties(p: spec.BasicProperties) -> bytes:
    """``b"".join(p.encode())``."""
    global _ENCODER
    if _ENCODER is None:
        _ENCODER = _encoder()
    return _ENCODER(p)


_ENCODER = None
_WRITE = {  # kind -> how a present value is appended (message ids are unique per message: never cached)
    "s": "append(_SHORT.get(value) or _short(value))", "id": "append(_short_string(value))",
    "t": "_encode_headers(pieces, value)", "o": "append(_BYTE.pack(value))", "q": "append(_U64.pack(value))",
}


def _encoder():
    """Straight-line code over ``FIELDS`` (the decoder's table): one test per field, no loop or lookups."""
    lines = ["def encode(p):", "    pieces = [b'']", "    append, flags = pieces.append, 0"]
    for name, kind in FIELDS:
        write = _WRITE["id" if name == "message_id" else kind]
        lines += [f"    value = p.{name}", "    if value is not None:",
                  f"        flags |= {getattr(Properties, 'FLAG_' + name.upper())}", f"        {write}"]
    lines += ["    pieces[0] = _U16.pack(flags)", "    return b''.join(pieces)"]
    namespace = {"_SHORT": _SHORT, "_short": _short, "_short_string": _short_string, "_U16": _U16, "_U64": _U64,
                 "_BYTE": _BYTE, "_encode_headers": _encode_headers}
    exec(compile("\n".join(lines) + "\n", "<properties encoder>", "exec"), namespace)  # noqa: S102 - our own text
    return namespace["encode"]
