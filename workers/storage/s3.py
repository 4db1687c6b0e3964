"""An S3 bucket through the ``minio`` SDK (path-style). Uploads stream in ``part_size`` parts (one part in
memory at a time); a multipart upload only becomes an object when it completes, and the SDK aborts it when
the source stream fails, so readers never see a partial object. User metadata travels as x-amz-meta-*.
An upload whose size and SHA-256 the caller knows (up to 5 GiB) is one PUT request streamed outside the SDK
(``workers.storage.s3stream``): signed with that SHA-256 as its payload hash and carrying it as
x-amz-checksum-sha256, so the server checks the body against it; nothing is buffered or hashed again, and
``put`` reports those bytes without a HEAD request (every other ``put`` stats what landed). S3's failures are
translated in ``workers.storage.s3errors``, its headers and dates in ``workers.storage.s3meta``."""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
from datetime import datetime, timedelta, timezone
from typing import Any, BinaryIO, Iterator, Sequence

import certifi
import urllib3
from minio import Minio
from minio.credentials import Credentials
from minio.error import S3Error
from minio.commonconfig import ENABLED
from minio.helpers import check_bucket_name
from minio.retention import Retention

from workers.storage._streams import SizedReader, reader
from workers.storage.base import (UNLOCKED, InvalidArgument, ObjectExists, ObjectInfo, ObjectLocked, ObjectNotFound,
                                  StorageError, StorageMisconfigured, validate_key, validate_metadata,
                                  validate_prefix)
from workers.storage.s3errors import missing_bucket, translate
from workers.storage.s3meta import accepted, meta_headers, stated, utc
from workers.storage.s3stream import SINGLE_PUT_MAX, ConditionalUnsupported, SignedRequests

log = logging.getLogger("appsvc_dr.storage")
MIN_PART, MAX_PART = 5 * 1024 * 1024, 5 * 1024 ** 3


def _secret(value: Any) -> str:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else (value or "")


class S3Store:
    atomic_rename = False        # no rename in S3; uploads are atomic anyway (object appears on completion)

    def __init__(self, endpoint: str, access_key: str, secret_key: Any, bucket: str, region: str | None = None,
                 secure: bool = True, create_bucket: bool = True, part_size: int = 16 * 1024 * 1024, *,
                 connect_timeout: float = 10.0, read_timeout: float = 120.0, lock_mode: str | None = None,
                 lock_for: timedelta | None = None) -> None:
        for scheme, is_secure in (("https://", True), ("http://", False)):
            if endpoint.lower().startswith(scheme):
                endpoint, secure = endpoint[len(scheme):].rstrip("/"), is_secure
        self.endpoint, self.bucket, self.region = endpoint, bucket, region or None
        self.secure, self.create_bucket, self.part_size = secure, create_bucket, part_size
        self.name = f"s3://{bucket}"
        # Object Lock: every put is given a retain-until date (mode GOVERNANCE or COMPLIANCE), and delete refuses
        # an object whose date has not passed (ObjectLocked, saying when it can go) instead of hiding it behind
        # a delete marker. The bucket must have Object Lock (and so versioning) enabled: see check_lock().
        self.lock_mode, self.lock_for = (lock_mode or None), lock_for
        if self.lock_mode is not None and not (lock_for and lock_for > timedelta(0)):
            raise StorageMisconfigured("S3 Object Lock needs a retention duration",
                                       hint="Set APPSVC_DR_STORE__S3_LOCK_DAYS (or the mirror target's "
                                            "s3_lock_days) to at least the retention policy's keep span.")
        try:
            check_bucket_name(bucket, strict=True)
        except ValueError as exc:
            raise StorageMisconfigured(f"invalid S3 bucket name {bucket!r}: {exc}",
                                       hint="Fix APPSVC_DR_STORE__S3_BUCKET (3-63 lower-case letters, digits, "
                                            "'-' and '.').") from None
        if not MIN_PART <= part_size <= MAX_PART:
            raise StorageMisconfigured(f"S3 part size {part_size} is outside 5 MiB..5 GiB",
                                       hint="Fix APPSVC_DR_STORE__S3_PART_SIZE.")
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout), maxsize=10,
            cert_reqs="CERT_REQUIRED", ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]))
        try:
            self._client = Minio(endpoint, access_key=access_key or None, secret_key=_secret(secret_key) or None,
                                 secure=secure, region=self.region, http_client=self._http)
        except ValueError as exc:
            raise StorageMisconfigured(f"invalid S3 endpoint {endpoint!r}: {exc}",
                                       hint="Set APPSVC_DR_STORE__S3_ENDPOINT to host:port (no path); "
                                            "APPSVC_DR_STORE__S3_SECURE picks https or http.") from None
        self._signed = SignedRequests(self._http, secure, endpoint, Credentials(access_key, _secret(secret_key)),
                                      self.region) if access_key and _secret(secret_key) else None
        self._bucket_ok = False
        self._conditional = True                    # the server takes If-None-Match on PUT (until it says not)

    def __repr__(self) -> str:
        return f"S3Store({self.name} at {self.endpoint})"

    # ------------------------------------------------------------------------------------- interface
    def put(self, key: str, stream: BinaryIO, size: int | None = None,
            metadata: dict[str, str] | None = None, *, sha256: str | None = None) -> ObjectInfo:
        validate_key(key)
        meta = validate_metadata(metadata)
        headers = meta_headers(meta)
        streamed = sha256 is not None and size is not None and 0 < size <= SINGLE_PUT_MAX and \
            self._signed is not None
        self._ensure_bucket()
        source = SizedReader(stream, size, key)
        with self._errors("upload", key, source):
            if streamed:
                response = self._signed.put(self.bucket, key, source, size, sha256, headers)  # type: ignore
            else:
                # length=-1: stream in part_size parts; one sequential upload keeps one part in memory and
                # leaves no upload threads behind when the source fails.
                self._client.put_object(self.bucket, key, source, length=-1, part_size=self.part_size,
                                        metadata=headers, num_parallel_uploads=1)  # type: ignore[arg-type]
        if meta.get("dr-lock") != UNLOCKED["dr-lock"]:
            self._lock(key)
        if streamed and source.count == size:
            return accepted(key, size, meta, response)
        return self.stat(key)

    def put_new(self, key: str, body: bytes, metadata: dict[str, str] | None = None) -> ObjectInfo:
        """Write ``key`` only if it does not exist (``ExclusiveCreate``): one signed PUT with ``If-None-Match: *``,
        refused atomically by the server when ``key`` exists (AWS S3, MinIO, moto). The key is checked first, so
        a server that ignores the header still refuses every writer but near-simultaneous ones; without
        credentials (no signed request), or on a server that does not implement the header, that check is all
        there is."""
        validate_key(key)
        meta = validate_metadata(metadata)
        self._ensure_bucket()
        exists = ObjectExists(f"{self.name}: {key!r} exists already (created by another writer)")
        if self.exists(key):
            raise exists
        sha256 = hashlib.sha256(body).hexdigest()
        if self._signed is not None and self._conditional:
            try:
                with self._errors("upload", key):
                    response = self._signed.put_if_absent(self.bucket, key, body, sha256, meta_headers(meta))
            except ConditionalUnsupported:
                self._conditional = False
                log.warning("%s does not support conditional PUTs (If-None-Match): write-once objects are "
                            "check-then-write there; run one scheduler per stamp", self.endpoint)
            else:
                if response is None:
                    raise exists
                return self._landed(key, len(body), meta, response)
        return self.put(key, io.BytesIO(body), len(body), metadata, sha256=sha256)

    @property
    def sends_pieces(self) -> bool:
        """Whether ``put_pieces`` sends pieces as they are (else it joins them first): with credentials."""
        return self._signed is not None

    def put_pieces(self, key: str, pieces: Sequence[Any], size: int, metadata: dict[str, str] | None = None, *,
                   sha256: str) -> ObjectInfo:
        """``put`` of an object held in memory as ``pieces`` (``size`` bytes, SHA-256 ``sha256``): one request
        sending them one after another, signed with ``sha256`` (:mod:`workers.storage.s3stream`); else (no
        credentials, over 5 GiB) a joined ``put``."""
        validate_key(key)
        if self._signed is None or not 0 < size <= SINGLE_PUT_MAX:
            return self.put(key, io.BytesIO(b"".join(pieces)), size, metadata, sha256=sha256)
        meta = validate_metadata(metadata)
        self._ensure_bucket()
        with self._errors("upload", key):
            response = self._signed.put_pieces(self.bucket, key, pieces, size, sha256, meta_headers(meta))
        return self._landed(key, size, meta, response)

    def _landed(self, key: str, size: int, meta: dict[str, str], response: urllib3.BaseHTTPResponse) -> ObjectInfo:
        """After a signed single PUT: the object's Object Lock retention (unless its metadata opts out), and what
        landed (``accepted``)."""
        if meta.get("dr-lock") != UNLOCKED["dr-lock"]:
            self._lock(key)
        return accepted(key, size, meta, response)

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        validate_key(key)
        self._ensure_bucket()
        with self._errors("read", key):
            response = self._client.get_object(self.bucket, key)

        def release() -> None:
            response.close()
            response.release_conn()

        stream = reader(response, lambda exc: self._translate(exc, "read", key), on_close=release, buffered=False)
        try:
            yield stream
        finally:
            stream.close()

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        self._ensure_bucket()
        with self._errors("stat", key):
            obj = self._client.stat_object(self.bucket, key)
        return stated(key, obj)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        return self._list(prefix)

    def delete(self, key: str) -> None:
        validate_key(key)
        self._ensure_bucket()
        if self.lock_mode is not None:
            self.check_deletable(key)
        with self._errors("delete", key):
            self._client.remove_object(self.bucket, key)     # S3 deletes are idempotent

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def close(self) -> None:
        self._http.clear()

    # ---------------------------------------------------------------------------------- object lock
    def _lock(self, key: str) -> None:
        """Set the retain-until date on what was just uploaded (its own request: S3 wants a Content-MD5 with a
        retention, which the SDK computes for this small request but not for a streamed upload)."""
        if self.lock_mode is None or self.lock_for is None:
            return
        with self._errors("lock", key):
            self._client.set_object_retention(self.bucket, key, Retention(
                self.lock_mode, datetime.now(timezone.utc) + self.lock_for))

    def locked_until(self, key: str) -> datetime | None:
        """The object's retain-until date while it is still in the future (None: deletable now, or missing)."""
        try:
            until = self.stat(key).retain_until
        except ObjectNotFound:
            return None
        return until if until is not None and until > datetime.now(timezone.utc) else None

    def check_deletable(self, key: str) -> None:
        """Raise ObjectLocked when ``key`` is under a retention that has not expired."""
        until = self.locked_until(key)
        if until is not None:
            raise ObjectLocked(f"{self.name}: {key} is locked (S3 Object Lock) until {until:%Y-%m-%d %H:%M} UTC",
                               until=until)

    def check_lock(self) -> list[str]:
        """Problems with the bucket's Object Lock set-up (empty when Object Lock and versioning are enabled)."""
        self._ensure_bucket()
        problems = []
        with self._errors("read the versioning of", ""):
            if self._client.get_bucket_versioning(self.bucket).status != ENABLED:
                problems.append(f"bucket {self.bucket!r} does not have versioning enabled")
        try:
            with self._errors("read the object lock configuration of", ""):
                self._client.get_object_lock_config(self.bucket)
        except (InvalidArgument, StorageMisconfigured, ObjectNotFound) as exc:
            problems.append(f"bucket {self.bucket!r} does not have Object Lock enabled ({exc.message})")
        return problems

    # --------------------------------------------------------------------------------------- helpers
    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        self._ensure_bucket()
        objects = self._client.list_objects(self.bucket, prefix=prefix or None, recursive=True)
        while True:
            with self._errors("list", prefix or "/"):
                obj = next(objects, None)
            if obj is None:
                return
            if not obj.is_dir:
                yield ObjectInfo(key=obj.object_name, size=int(obj.size or 0), modified=utc(obj.last_modified),
                                 etag=obj.etag)

    def _ensure_bucket(self) -> None:
        if self._bucket_ok:
            return
        with self._errors("check bucket", ""):
            if not self._client.bucket_exists(self.bucket):
                if not self.create_bucket:
                    raise StorageMisconfigured(
                        f"{self.name} at {self.endpoint}: the bucket does not exist",
                        hint=f"Create bucket {self.bucket!r}, fix APPSVC_DR_STORE__S3_BUCKET, or set "
                             "APPSVC_DR_STORE__S3_CREATE_BUCKET=true to let the worker create it.")
                try:
                    self._client.make_bucket(self.bucket, location=self.region,
                                             object_lock=self.lock_mode is not None)
                except S3Error as exc:
                    if exc.code != "BucketAlreadyOwnedByYou":        # another worker was faster
                        raise
        self._bucket_ok = True

    @contextlib.contextmanager
    def _errors(self, verb: str, key: str, source: SizedReader | None = None) -> Iterator[None]:
        try:
            yield
        except StorageError:
            raise
        except Exception as exc:
            if source is not None and exc is source.failure:
                raise                                 # the caller's stream failed: not a storage error
            mapped = self._translate(exc, verb, key)
            if mapped is None:
                raise
            raise mapped from exc

    def _translate(self, exc: BaseException, verb: str, key: str) -> StorageError | None:
        if missing_bucket(exc):                        # asked again (and created, if allowed) next time
            self._bucket_ok = False
        return translate(exc, verb, key, name=self.name, endpoint=self.endpoint, bucket=self.bucket)
