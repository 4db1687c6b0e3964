"""ArtifactStore on a real S3 server (moto over HTTP) when things go wrong: the server dies mid-upload,
a job is re-run, a key is re-used, the stored bytes are altered.

The S3 server here is moto's backend served *in this process* by a werkzeug server that can be killed hard
(listener and every open connection closed, like a crashed process) and restarted on the same port; moto's
state lives in the process, so buckets and objects survive the restart. It also logs each request, so a test
can tell whether anything was uploaded.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import random
import socket
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest
import requests

from tests.fixtures import ServiceStartError, free_port, started
from tests.unit.certs import make_cert
from workers.artifacts.service import RECORD_SUFFIX, ArtifactStore, OverwriteError
from workers.runtime.errors import PermanentError, TransientError
from workers.storage.codec import IntegrityError, KeyRing
from workers.storage.base import ObjectNotFound, StorageUnavailable
from workers.storage.s3 import S3Store

pytestmark = pytest.mark.integration

MiB = 1 << 20
PART_SIZE = 5 * MiB                     # the S3 minimum: a 40 MiB artifact is a real multipart upload
ACCESS_KEY, SECRET_KEY = "dr-test-access", "dr-test-secret-value"


# ------------------------------------------------------------------------------------ killable S3 server
class KillableS3:
    """moto's S3 backend behind a werkzeug server on 127.0.0.1:``port`` that ``kill()`` stops hard."""

    def __init__(self, port: int) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        self.port = port
        self.requests: list[tuple[str, str, str, int]] = []  # (method, path, query, status) once answered
        self._app = DomainDispatcherApplication(create_backend_app)
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def _logging_app(self, environ, start_response):  # type: ignore[no-untyped-def]
        entry = [environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")]

        def logged_start(status, headers, exc_info=None):  # type: ignore[no-untyped-def]
            self.requests.append((entry[0], entry[1], entry[2], int(status.split()[0])))
            return start_response(status, headers, exc_info)

        return self._app(environ, logged_start)

    def start(self) -> None:
        from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

        class Quiet(WSGIRequestHandler):
            def log(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
                pass

        class Server(ThreadedWSGIServer):
            connections: set[socket.socket]
            killed = False

            def process_request(self, request, client_address):  # type: ignore[no-untyped-def]
                with lock:
                    self.connections.add(request)
                super().process_request(request, client_address)

            def shutdown_request(self, request):  # type: ignore[no-untyped-def]
                with lock:
                    self.connections.discard(request)
                super().shutdown_request(request)

            def handle_error(self, request, client_address):  # type: ignore[no-untyped-def]
                if not self.killed:
                    super().handle_error(request, client_address)

        lock = threading.Lock()
        try:
            server = Server("127.0.0.1", self.port, self._logging_app, handler=Quiet)
        except (SystemExit, OSError) as exc:        # werkzeug exits when it cannot bind
            raise ServiceStartError(f"cannot listen on {self.endpoint}: {exc}") from None
        server.connections = set()
        self._server, self._lock = server, lock
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"moto-s3-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/moto-api/data.json", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise ServiceStartError(f"in-process moto did not answer on {self.url}")
            time.sleep(0.05)

    def kill(self) -> None:
        """Stop accepting (listener closed) and cut every open connection, mid-request or idle."""
        server, self._server = self._server, None
        if server is None:
            return
        server.killed = True
        server.shutdown()                      # serve_forever returns and closes the listening socket
        with self._lock:
            victims = list(server.connections)
        for sock in victims:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        assert self._thread is not None
        self._thread.join(10)

    def reset(self) -> None:
        requests.post(f"{self.url}/moto-api/reset", timeout=30).raise_for_status()

    def open_multipart_uploads(self, bucket: str) -> int:
        resp = requests.get(f"{self.url}/{bucket}?uploads", timeout=30)
        resp.raise_for_status()
        return resp.text.count("<Upload>")

    def puts_to(self, path: str) -> int:
        return sum(1 for method, p, _, _ in self.requests if method == "PUT" and p == path)

    def gets_of(self, path: str) -> int:
        return sum(1 for method, p, _, _ in self.requests if method == "GET" and p == path)


@contextlib.contextmanager
def killable_s3() -> Iterator[KillableS3]:
    try:
        server = KillableS3(free_port())
    except ImportError as exc:
        raise ServiceStartError(f"moto[server] is not installed ({exc})") from None
    server.start()
    try:
        yield server
    finally:
        if server._server is None:
            with contextlib.suppress(ServiceStartError):
                server.start()
        with contextlib.suppress(Exception):
            server.reset()                     # moto's state lives in this process: free it
        server.kill()


@pytest.fixture(scope="module")
def s3() -> Iterator[KillableS3]:
    with started("moto S3 server (in-process, killable)", killable_s3()) as server:
        yield server


@pytest.fixture
def store(s3: KillableS3) -> Iterator[S3Store]:
    backend = S3Store(s3.endpoint, ACCESS_KEY, SECRET_KEY, f"t-{uuid.uuid4().hex[:12]}", region="us-east-1",
                      secure=False, part_size=PART_SIZE)
    yield backend
    with contextlib.suppress(Exception):
        for info in list(backend.list("")):
            backend.delete(info.key)
    backend.close()


@pytest.fixture(scope="module")
def cert():  # type: ignore[no-untyped-def]
    return make_cert("appsvc-dr-resilience")


@pytest.fixture(scope="module")
def keyring(cert) -> KeyRing:  # type: ignore[no-untyped-def]
    ring = KeyRing()
    ring.add_pem(cert.key_pem(), certificate=cert.cert_pem)
    return ring


# ------------------------------------------------------------------------------------------- helpers
def write_semi_compressible(path: Path, size: int, seed: int) -> str:
    """``size`` bytes alternating 64 KiB random / repeated text blocks; returns the SHA-256."""
    rng, text = random.Random(seed), (b"site=app;db=sql;stamp=1;" * 4096)[:64 * 1024]
    digest, left, block = hashlib.sha256(), size, 0
    with open(path, "wb") as fh:
        while left:
            n = min(left, 64 * 1024)
            data = rng.randbytes(n) if block % 2 == 0 else text[:n]
            fh.write(data)
            digest.update(data)
            left, block = left - n, block + 1
    return digest.hexdigest()


class Opener:
    """An ``open_source`` callable that counts how often it was called."""

    def __init__(self, path: Path) -> None:
        self.path, self.calls = path, 0

    def __call__(self):  # type: ignore[no-untyped-def]
        self.calls += 1
        return open(self.path, "rb")


def never_open():  # type: ignore[no-untyped-def]
    raise AssertionError("the source was opened although its SHA-256 was given")


def fetch(artifacts: ArtifactStore, key: str, keys: KeyRing | None) -> bytes:
    out = io.BytesIO()
    artifacts.get(key, out, keys=keys)
    return out.getvalue()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


# --------------------------------------------------------------------------------------------- tests
def test_server_killed_mid_upload_fails_transient_and_retry_completes(s3, store, cert, keyring, tmp_path):
    # Given a ~40 MiB staged backup, compressed + encrypted into 5 MiB parts
    source = tmp_path / "orders.bak"
    plain_sha = write_semi_compressible(source, 40 * MiB, seed=1)
    artifacts = ArtifactStore(store, certificate=cert.certificate)
    key = "stamp1/2026-11-21/db/orders.bak.zst"
    part_path = f"/{store.bucket}/{key}"
    answered_before = len(s3.requests)
    # ... and a killer that stops the server once a part has landed and >= 12 MiB of the source were read,
    # while the upload goes on (it is held at 28 MiB until the server is down, so the kill is always mid-upload)
    read, reached, killed = 0, threading.Event(), threading.Event()

    def progress(n: int) -> None:
        nonlocal read
        read += n
        if read >= 12 * MiB:
            reached.set()
        if read >= 28 * MiB:
            assert killed.wait(60), "the server was not killed in time"

    def part_landed() -> bool:
        return any(m == "PUT" and p == part_path and "partNumber" in q and status == 200
                   for m, p, q, status in s3.requests[answered_before:])

    def killer() -> None:
        reached.wait(120)
        deadline = time.monotonic() + 60
        while not part_landed() and time.monotonic() < deadline:
            time.sleep(0.005)
        s3.kill()
        killed.set()

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()

    # When the put runs into the dead server
    try:
        with pytest.raises(TransientError) as failure:
            artifacts.put(key, Opener(source), progress=progress)
    finally:
        reached.set()                       # whatever happened, the killer finishes and the server comes back
        thread.join(120)
        s3.start()                          # same port; moto's state (bucket, open uploads) is kept

    # Then it is a transient storage error raised mid-upload, after at least one part had been stored
    assert isinstance(failure.value, StorageUnavailable), repr(failure.value)
    assert not isinstance(failure.value, PermanentError)
    assert part_landed() and read < 40 * MiB
    # ... and nothing is visible under the key: no object, no record, nothing listed
    with pytest.raises(ObjectNotFound):
        store.stat(key)
    with pytest.raises(ObjectNotFound):
        store.stat(key + RECORD_SUFFIX)
    assert artifacts.record(key) is None
    assert list(store.list("stamp1/")) == []

    # When the job is retried against the restarted server
    stored = artifacts.put(key, Opener(source))

    # Then it completes, and the artifact decodes byte-identical
    assert not stored.deduplicated and stored.encrypted and stored.compressed
    assert stored.plaintext_sha256 == plain_sha and stored.plaintext_size == 40 * MiB
    assert artifacts.record(key) == stored
    assert store.stat(key).size == stored.stored_size
    restored = tmp_path / "restored.bak"
    with open(restored, "wb") as out:
        artifacts.get(key, out, keys=keyring)
    assert sha256_file(restored) == plain_sha
    assert artifacts.check(key, keys=keyring) == stored


def test_rerun_of_same_source_is_deduplicated_without_upload(s3, store, cert, tmp_path):
    # Given an artifact stored once
    source = tmp_path / "site.zip"
    plain_sha = write_semi_compressible(source, 3 * MiB, seed=2)
    artifacts = ArtifactStore(store, certificate=cert.certificate)
    key = "stamp1/2026-11-21/files/site.zip.zst"
    first = artifacts.put(key, Opener(source))
    before = store.stat(key)
    puts = s3.puts_to(f"/{store.bucket}/{key}") + s3.puts_to(f"/{store.bucket}/{key}{RECORD_SUFFIX}")
    time.sleep(1.1)                         # S3 times have second resolution: a re-upload would show

    # When the same job runs again (redelivered event)
    opener = Opener(source)
    second = artifacts.put(key, opener)

    # Then the stored artifact is reported as deduplicated and nothing was uploaded
    assert second.deduplicated and not first.deduplicated
    assert opener.calls == 1                # read once, to hash it
    assert second.plaintext_sha256 == plain_sha == first.plaintext_sha256
    assert second.stored_sha256 == first.stored_sha256
    after = store.stat(key)
    assert (after.etag, after.modified, after.size) == (before.etag, before.modified, before.size)
    assert s3.puts_to(f"/{store.bucket}/{key}") + s3.puts_to(f"/{store.bucket}/{key}{RECORD_SUFFIX}") == puts

    # When it runs again with the producer's SHA-256
    third = artifacts.put(key, never_open, known_sha256=plain_sha)

    # Then the source is not even opened
    assert third.deduplicated and third.stored_sha256 == first.stored_sha256
    assert store.stat(key).etag == before.etag


def test_different_source_under_same_key_is_refused_and_the_stored_one_kept(s3, store, cert, keyring, tmp_path):
    # Given an artifact stored under a key
    old, new = tmp_path / "old.bak", tmp_path / "new.bak"
    write_semi_compressible(old, 2 * MiB, seed=3)
    write_semi_compressible(new, 2 * MiB + 4096, seed=4)
    artifacts = ArtifactStore(store, certificate=cert.certificate)
    key = "stamp1/2026-11-21/db/reused.bak.zst"
    first = artifacts.put(key, Opener(old))

    # When a different source is put under the same key / Then it is refused: stored keys are write-once
    with pytest.raises(OverwriteError, match=f"refusing to overwrite {key}"):
        artifacts.put(key, Opener(new))

    # And the stored artifact is untouched: object, record and content
    assert artifacts.record(key) == replace(first, deduplicated=False)
    assert store.stat(key).size == first.stored_size
    assert fetch(artifacts, key, keyring) == old.read_bytes()


class _TamperAfterUpload:
    """Wraps a backend: right after ``key`` is uploaded, overwrite it with one byte flipped (same size)."""

    def __init__(self, inner: S3Store, key: str) -> None:
        self._inner, self._key = inner, key

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._inner, name)

    def put(self, key, stream, size=None, metadata=None, **kwargs):  # type: ignore[no-untyped-def]
        info = self._inner.put(key, stream, size, metadata, **kwargs)
        if key == self._key:
            with self._inner.open(key) as fh:
                data = bytearray(fh.read())
            data[len(data) // 2] ^= 0x01
            info = self._inner.put(key, io.BytesIO(bytes(data)), len(data), metadata)
        return info


def test_read_back_verification_on_s3(s3, store, cert, keyring, tmp_path):
    # Given an artifact store that verifies by reading the object back
    source = tmp_path / "db.bak"
    plain_sha = write_semi_compressible(source, 6 * MiB, seed=5)
    artifacts = ArtifactStore(store, certificate=cert.certificate, verify="read-back")
    key = "stamp1/2026-11-21/db/verified.bak.zst"

    # When an artifact is stored
    stored = artifacts.put(key, Opener(source))

    # Then it was read back before the record was written, and the record says so
    assert stored.verified_by == "read-back" and artifacts.record(key) == stored
    assert s3.gets_of(f"/{store.bucket}/{key}") >= 1
    assert stored.plaintext_sha256 == plain_sha and fetch(artifacts, key, keyring) == source.read_bytes()

    # When the bytes that landed differ from those sent (same size: a stat cannot tell)
    bad_key = "stamp1/2026-11-21/db/damaged-in-flight.bak.zst"
    damaging = ArtifactStore(_TamperAfterUpload(store, bad_key), certificate=cert.certificate,  # type: ignore[arg-type]
                             verify="read-back")
    with pytest.raises(TransientError, match="SHA-256 of the stored bytes differs"):
        damaging.put(bad_key, Opener(source))

    # Then the damaged object is removed and no record is written
    with pytest.raises(ObjectNotFound):
        store.stat(bad_key)
    assert artifacts.record(bad_key) is None


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "compressed-only"])
@pytest.mark.parametrize("where", ["header", "middle", "last-byte"])
def test_tampered_object_fails_get_and_check(s3, store, cert, keyring, tmp_path, encrypted, where):
    # Given a stored artifact
    source = tmp_path / "db.bak"
    write_semi_compressible(source, 3 * MiB, seed=6)
    artifacts = ArtifactStore(store, certificate=cert.certificate if encrypted else None)
    key = "stamp1/2026-11-21/db/tampered.bak.zst"
    stored = artifacts.put(key, Opener(source))
    keys = keyring if encrypted else None
    assert artifacts.check(key, keys=keys) == stored

    # When someone overwrites it on S3 with one byte flipped (a raw put, same size, record untouched)
    with store.open(key) as fh:
        data = bytearray(fh.read())
    offset = {"header": 20, "middle": len(data) // 2, "last-byte": len(data) - 1}[where]
    data[offset] ^= 0x80
    store.put(key, io.BytesIO(bytes(data)), len(data), store.stat(key).metadata)
    assert store.stat(key).size == stored.stored_size

    # Then reading it fails permanently (integrity), and so does check() with and without keys
    with pytest.raises(PermanentError) as failure:
        fetch(artifacts, key, keys)
    if where != "header":
        assert isinstance(failure.value, IntegrityError), repr(failure.value)
    with pytest.raises(PermanentError):
        artifacts.check(key, keys=keys)
    if encrypted:
        with pytest.raises(PermanentError, match="do not match the record"):
            artifacts.check(key)        # without keys: compares the stored bytes with the record


def test_rejected_upload_leaves_no_stale_record(s3, store, cert, tmp_path):
    # Given an artifact stored under a key, with its record
    source = tmp_path / "db.bak"
    write_semi_compressible(source, 1 * MiB, seed=7)
    artifacts = ArtifactStore(store, certificate=cert.certificate)
    key = "stamp1/2026-11-21/db/rejected.bak.zst"
    artifacts.put(key, Opener(source))

    # When a re-run claims another SHA-256 for that key / Then it is refused and the record still has its object
    with pytest.raises(OverwriteError):
        artifacts.put(key, Opener(source), known_sha256="0" * 64)
    assert artifacts.record(key) is not None and store.exists(key)

    # And when a new key's upload is rejected because the staged file does not match the producer's SHA-256
    fresh = "stamp1/2026-11-21/db/rejected-2.bak.zst"
    with pytest.raises(TransientError, match="changed while it was read"):
        artifacts.put(fresh, Opener(source), known_sha256="0" * 64)

    # Then neither a record nor the object is left (catalogs are rebuilt from records)
    assert artifacts.record(fresh) is None and not store.exists(fresh)