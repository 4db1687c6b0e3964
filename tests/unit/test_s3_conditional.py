"""Conditional creates against an S3-compatible server that does not implement ``If-None-Match`` on PUT (older
MinIO or Ceph releases answer 501 NotImplemented): the signed request says so, instead of a claim failing for
ever. A real HTTP server on loopback answers as such a server does; moto (which implements it) is covered by the
storage contract suite and tests/integration/test_object_lock.py."""
from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import urllib3
from minio.credentials import Credentials

from workers.storage.s3stream import ConditionalUnsupported, SignedRequests

NOT_IMPLEMENTED = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code><Message>A header you '
                   b'provided implies functionality that is not implemented</Message></Error>')


class OldServer(BaseHTTPRequestHandler):
    stored: dict[str, bytes] = {}

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("If-None-Match"):
            self._answer(501, NOT_IMPLEMENTED, "application/xml")
            return
        self.stored[self.path] = body
        self._answer(200, b"", "text/plain")          # (no ETag: an old server may send none)

    def do_HEAD(self) -> None:  # noqa: N802 - the bucket exists; an object if it was stored
        found = self.path.count("/") == 1 or self.path in self.stored
        self._answer(200 if found else 404, b"", "text/plain")

    def _answer(self, status: int, body: bytes, kind: str) -> None:
        head = (f"HTTP/1.1 {status} -\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n")
        self.wfile.write(head.encode() + body)
        self.close_connection = True


@pytest.fixture
def old_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), OldServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_server_without_conditional_puts_is_reported_as_such_and_nothing_is_written(old_server):
    # Given signed requests to a server that answers 501 NotImplemented to If-None-Match
    requests = SignedRequests(urllib3.PoolManager(), False, old_server, Credentials("k", "s"), "us-east-1")
    # When a write-once object is created there
    with pytest.raises(ConditionalUnsupported, match="does not support If-None-Match"):
        requests.put_if_absent("bucket", "stamp1/schedule/db/20261203T020000Z.json", b"{}",
                               hashlib.sha256(b"{}").hexdigest(), {})
    # Then the caller is told (it falls back to check-then-write) and the server stored nothing
    assert OldServer.stored == {}


def test_the_store_falls_back_to_check_then_write_there_and_says_so_once(old_server, caplog):
    # Given an S3 store on such a server
    from workers.storage.base import ObjectExists
    from workers.storage.s3 import S3Store
    OldServer.stored.clear()
    store = S3Store(old_server, "k", "s", "bucket", region="us-east-1", secure=False)
    # When two claims are created, then the first again
    store.put_new("stamp1/schedule/db/a.json", b'{"n": 1}')
    store.put_new("stamp1/schedule/db/b.json", b'{"n": 2}')
    # Then both were written (plain PUTs), the fallback was reported once, and the existing one is refused
    assert OldServer.stored == {"/bucket/stamp1/schedule/db/a.json": b'{"n": 1}',
                                "/bucket/stamp1/schedule/db/b.json": b'{"n": 2}'}
    assert sum("does not support conditional PUTs" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(ObjectExists):
        store.put_new("stamp1/schedule/db/a.json", b'{"n": 3}')
    assert OldServer.stored["/bucket/stamp1/schedule/db/a.json"] == b'{"n": 1}'
