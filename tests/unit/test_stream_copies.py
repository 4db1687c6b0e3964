"""Fewer copies on a restore's read path: a decoded pack's pieces as views of its segments, and an S3 response read
without a buffer of ours in between (docs/performance.md, 2026-12-05)."""
from __future__ import annotations

import hashlib
import io
import random

import pytest

from workers.fileshare.restoreio import pieces_of
from workers.storage.base import StorageUnavailable
from workers.storage.codec import KeyRing, decode, encode
from workers.storage._streams import TranslatingReader, reader

try:  # tests/unit is a plain directory today; keep working if it becomes a package
    from tests.unit.certs import make_cert
except ImportError:  # pragma: no cover
    from certs import make_cert  # type: ignore[no-redef]

SEGMENT = 64 * 1024


@pytest.fixture(scope="module")
def packed():
    """An encrypted, uncompressed artifact of 5 segments and a bit (as the packs of incompressible data are)."""
    cert = make_cert("appsvc-dr-copies")
    keys = KeyRing()
    keys.add_pem(cert.key_pem(), certificate=cert.cert_pem)
    plain = random.Random(3).randbytes(5 * SEGMENT + 1234)
    stream = encode(io.BytesIO(plain), compress=False, recipient=cert.certificate, segment_size=SEGMENT)
    return plain, stream.read(), keys


def test_pieces_are_views_of_the_decoded_segments_and_add_up_to_the_plaintext(packed):
    plain, blob, keys = packed
    stream = decode(io.BytesIO(blob), keys=keys)
    # When a pack's plaintext is taken in blob-sized runs that cross the segments' edges
    sizes, got, pieces_seen = [1000, 70_000, 3 * SEGMENT, SEGMENT - 7, 10 ** 6], [], []
    for size in sizes:
        pieces = pieces_of(stream, size)
        got.append(b"".join(pieces))
        pieces_seen += pieces
    # Then every byte comes back in order, and the pieces hash as the joined bytes do
    assert b"".join(got) == plain
    assert hashlib.sha256(b"".join(pieces_seen)).digest() == hashlib.sha256(plain).digest()
    # And a piece cut out of a segment is a view of that decoded segment (no copy), a whole segment itself
    views = [p for p in pieces_seen if isinstance(p, memoryview)]
    assert views and all(len(p.obj) in (SEGMENT, 1234) for p in views)
    assert all(len(p) < len(p.obj) for p in views)
    assert any(isinstance(p, bytes) and len(p) == SEGMENT for p in pieces_seen)


def test_plain_reads_still_return_bytes(packed):
    plain, blob, keys = packed
    stream = decode(io.BytesIO(blob), keys=keys)
    parts = [stream.read(50_000) for _ in range(8)]
    assert all(type(p) is bytes for p in parts) and b"".join(parts) == plain


class _Response:
    """An HTTP response as urllib3 gives it: ``read(n)`` returns n bytes (fewer only at the end)."""

    def __init__(self, data: bytes, fail_after: int | None = None) -> None:
        self._data, self._pos, self._fail_after, self.returned = data, 0, fail_after, []

    def read(self, amt=None):
        if self._fail_after is not None and self._pos >= self._fail_after:
            raise ConnectionResetError("reset by peer")
        end = len(self._data) if amt is None else self._pos + amt
        chunk, self._pos = self._data[self._pos:end], min(end, len(self._data))
        self.returned.append(chunk)
        return chunk

    def close(self):
        pass


def test_an_unbuffered_reader_hands_on_the_responses_own_bytes():
    raw = _Response(bytes(range(256)) * 4096)
    stream = reader(raw, lambda exc: None, buffered=False)
    first = stream.read(300_000)
    assert first is raw.returned[-1]                  # the response's bytes object itself: not copied again
    rest = bytearray(2 ** 20)
    n = stream.readinto(rest)
    assert first + bytes(rest[:n]) == raw._data and stream.read(10) == b""


def test_an_unbuffered_reader_still_translates_errors_and_closes_once():
    closed = []
    stream = reader(_Response(b"x" * 1000, fail_after=500),
                    lambda exc: StorageUnavailable(f"s3 read: {exc}") if isinstance(exc, OSError) else None,
                    on_close=lambda: closed.append(1), buffered=False)
    assert isinstance(stream, TranslatingReader) and stream.read(500) == b"x" * 500
    with pytest.raises(StorageUnavailable, match="reset by peer"):
        stream.read(10)
    stream.close()
    stream.close()
    assert closed == [1]
    with pytest.raises(ValueError, match="closed"):
        stream.read(1)
