"""A stream read ahead on a thread: the same bytes in the same order, errors where they happened, bounded memory,
and a verified artifact read through it (real local store, real encryption) still refuses altered bytes."""
from __future__ import annotations

import contextlib
import io
import os
import threading
import time

import pytest

from tests.unit.certs import make_cert
from workers.artifacts.service import ArtifactStore
from workers.storage.codec import IntegrityError, KeyRing
from workers.storage.local import LocalStore
from workers.storage.readahead import ReadAhead, write_behind


class Source(io.RawIOBase):
    """Returns at most ``step`` bytes per read (short reads), counts the reads, and fails after ``fail_at`` bytes."""

    def __init__(self, data: bytes, step: int, fail_at: int | None = None) -> None:
        self.data, self.step, self.fail_at, self.pos, self.reads = data, step, fail_at, 0, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.fail_at is not None and self.pos >= self.fail_at:
            raise ConnectionResetError("the connection dropped")
        self.reads += 1
        piece = self.data[self.pos:self.pos + min(size, self.step)]
        self.pos += len(piece)
        return piece


@pytest.mark.parametrize("size", [1, 1000, 65536, 1 << 20, 3 << 20])
def test_the_same_bytes_in_order_for_any_read_size(size):
    # Given 5 MiB from a source that answers in short reads of 300,000 bytes
    data = os.urandom(5 << 20)
    # When it is read through a read-ahead stream with reads of ``size``
    with contextlib.closing(ReadAhead(Source(data, 300_000), chunk=1 << 20, depth=2)) as stream:
        got = b"".join(iter(lambda: stream.read(size), b""))
        # Then exactly the source's bytes come out, and the end stays the end
        assert got == data
        assert stream.read(10) == b""


def test_an_error_of_the_source_comes_after_the_bytes_read_before_it():
    # Given a source that fails after 2.5 MiB
    data = os.urandom(4 << 20)
    stream = ReadAhead(Source(data, 1 << 20, fail_at=(5 << 20) // 2), chunk=1 << 20, depth=4)
    # When it is read
    got = bytearray()
    with pytest.raises(ConnectionResetError):
        while chunk := stream.read(1 << 19):
            got += chunk
    # Then every byte before the failure arrived, in order, and the error was raised where it happened
    assert bytes(got) == data[:3 << 20]
    stream.close()


def test_it_reads_at_most_depth_chunks_ahead_and_close_stops_the_thread():
    # Given a read-ahead stream over 64 MiB whose caller reads one chunk and stops
    source = Source(b"\0" * (64 << 20), 1 << 20)
    stream = ReadAhead(source, chunk=1 << 20, depth=3)
    assert len(stream.read(1 << 20)) == 1 << 20
    time.sleep(0.3)
    # Then the thread read the one consumed chunk, the 3 waiting and at most one more it holds: memory is bounded
    assert source.reads <= 1 + 3 + 1
    # And closing it stops the thread, though the queue is full
    stream.close()
    assert not any(t.name == "read-ahead" and t.is_alive() for t in threading.enumerate())


@pytest.fixture(scope="module")
def keys():
    cert, ring = make_cert("appsvc-dr-readahead"), KeyRing()
    ring.add_pem(cert.key_pem(), certificate=cert.cert_pem)
    return cert, ring


def test_a_verified_artifact_read_ahead_is_exact_and_altered_bytes_are_refused(tmp_path, keys):
    # Given an encrypted artifact of 6 MiB in a local store
    cert, ring = keys
    store = ArtifactStore(LocalStore(tmp_path / "store"), certificate=cert.certificate)
    data = os.urandom(6 << 20)
    store.put("s/set/database/db.bak", lambda: contextlib.nullcontext(io.BytesIO(data)))
    # When it is read with read-ahead
    with store.open_plain("s/set/database/db.bak", keys=ring, read_ahead=True) as plain:
        got = b"".join(iter(lambda: plain.read(1 << 20), b""))
    # Then it is exact
    assert got == data
    # And once one stored byte in its middle is flipped, reading it through read-ahead fails as without it
    path = tmp_path / "store" / "s" / "set" / "database" / "db.bak"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        with store.open_plain("s/set/database/db.bak", keys=ring, read_ahead=True) as plain:
            while plain.read(1 << 20):
                pass
    assert not any(t.name == "read-ahead" and t.is_alive() for t in threading.enumerate())


class Sink(io.RawIOBase):
    """A file that records what it was given, slowly, and fails at its ``fail_on``-th write."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.parts: list[bytes] = []
        self.fail_on = fail_on

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self.fail_on is not None and len(self.parts) + 1 >= self.fail_on:
            raise OSError(28, "No space left on device")
        time.sleep(0.001)
        self.parts.append(bytes(data))
        return len(data)


def test_writes_behind_land_in_order_and_all_before_the_block_ends():
    # Given 200 chunks written behind the caller
    chunks = [os.urandom(1000 + i) for i in range(200)]
    sink = Sink()
    with write_behind(sink, depth=3) as out:
        for chunk in chunks:
            out.write(chunk)
    # Then when the block ends every chunk was written, in order, and the thread is gone
    assert sink.parts == chunks
    assert not any(t.name == "write-behind" and t.is_alive() for t in threading.enumerate())


def test_a_failed_write_is_raised_in_the_caller_and_nothing_after_it_is_written():
    # Given a file that fails at its 5th write (a full disk)
    sink = Sink(fail_on=5)
    # When 100 chunks are written behind
    with pytest.raises(OSError, match="No space left"):
        with write_behind(sink, depth=2) as out:
            for i in range(100):
                out.write(b"%d" % i)
    # Then the error reached the caller, the 4 writes before it landed and nothing after
    assert sink.parts == [b"0", b"1", b"2", b"3"]
    assert not any(t.name == "write-behind" and t.is_alive() for t in threading.enumerate())


def test_when_the_caller_fails_writing_stops_before_it_goes_on():
    # Given a caller that fails after handing over 3 chunks (e.g. the artifact failed its check)
    sink = Sink()
    with pytest.raises(IntegrityError):
        with write_behind(sink, depth=8) as out:
            for i in range(3):
                out.write(b"%d" % i)
            raise IntegrityError("the stored bytes do not match")
    # Then the thread is gone when the caller goes on (it may delete the file now), and nothing comes later
    assert not any(t.name == "write-behind" and t.is_alive() for t in threading.enumerate())
    written = list(sink.parts)
    time.sleep(0.05)
    assert sink.parts == written and len(written) <= 3
