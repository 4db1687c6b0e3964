"""One S3 PUT request streamed from the caller's stream (or from the pieces of an object held in memory), for an
object whose size and SHA-256 are known before its first byte is sent (a mirror copy of a recorded artifact, a
record, an encoded pack).

The request is signed (SigV4, with minio's public signer) with that SHA-256 as the payload hash and carries it
as x-amz-checksum-sha256 too, so S3 refuses a body that differs from it (XAmzContentSHA256Mismatch /
BadDigest) instead of storing it. The body goes out as the source yields it, 1 MiB at a time: nothing is
buffered (the minio SDK reads a whole part into memory and hashes it again to sign it). A source that ends
early, runs on past the size or fails is never completed: the connection is dropped before the last byte, and
S3 keeps nothing of an incomplete request. S3 takes at most 5 GiB in one PUT; larger objects go multipart.
The same request with ``If-None-Match: *`` creates a small object only if its key is free (``put_if_absent``).
"""
from __future__ import annotations

import base64
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator, Mapping, Sequence
from urllib.parse import SplitResult, quote

import urllib3
from minio.credentials import Credentials
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.signer import sign_v4_s3

from workers.storage._streams import SizedReader
from workers.storage.base import InvalidArgument

SINGLE_PUT_MAX = 5 * 1024 ** 3        # S3's limit for one PUT request
CHUNK = 1024 * 1024
CONFLICT_RETRIES = 3                  # a 409 to a conditional PUT: retried this often
_EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


class ConditionalUnsupported(Exception):
    """The server refused ``If-None-Match`` on PUT as not implemented (an older S3-compatible server)."""


class SignedRequests:
    """Signed requests to one S3 endpoint outside the SDK: the streamed PUT, and the bucket's region it needs
    (GetBucketLocation, once, when no region is configured: what the SDK asks too)."""

    def __init__(self, http: urllib3.PoolManager, secure: bool, endpoint: str, credentials: Credentials,
                 region: str | None) -> None:
        self.http, self.host = http, endpoint
        self.scheme = "https" if secure else "http"
        self.credentials, self.region = credentials, region
        self._regions: dict[str, str] = {}

    def put(self, bucket: str, key: str, source: SizedReader, size: int, sha256: str,
            headers: Mapping[str, str]) -> urllib3.BaseHTTPResponse:
        """Send ``size`` bytes of ``source`` as ``key``; returns the server's answer (raises S3Error & co.)."""
        return self._put(bucket, key, _body(source, size), size, sha256, headers)

    def put_pieces(self, bucket: str, key: str, pieces: Sequence[Any], size: int, sha256: str,
                   headers: Mapping[str, str]) -> urllib3.BaseHTTPResponse:
        """Send an object held in memory as ``pieces`` (an encoded pack: header, records, trailer) one after
        another: no joined copy of the whole, and no second hash of it."""
        if sum(memoryview(p).nbytes for p in pieces) != size:
            raise InvalidArgument(f"the pieces of {key} do not add up to the declared size {size}")
        return self._put(bucket, key, list(pieces), size, sha256, headers)

    def put_if_absent(self, bucket: str, key: str, body: bytes, sha256: str, headers: Mapping[str, str]
                      ) -> urllib3.BaseHTTPResponse | None:
        """Create ``key`` with ``body`` (SHA-256 ``sha256``) unless it exists: ``If-None-Match: *``, which the
        server decides atomically (412 Precondition Failed: it exists, None is returned). A 409 (a conflicting
        conditional write in flight, AWS) is retried after a moment; the other writer's object then answers 412.
        A 501 (the header is not implemented) raises :class:`ConditionalUnsupported`."""
        for attempt in range(CONFLICT_RETRIES + 1):
            response = self._put(bucket, key, [body], len(body), sha256, {**headers, "If-None-Match": "*"},
                                 answered=(409, 412, 501))
            if response.status == 412:
                return None
            if response.status == 501:
                raise ConditionalUnsupported(f"{self.host} does not support If-None-Match on PUT")
            if response.status != 409 or attempt == CONFLICT_RETRIES:
                break
            time.sleep(0.2 * (attempt + 1))
        _raise_for(response, bucket, key)                   # a 409 after the retries
        return response

    def _put(self, bucket: str, key: str, body: Iterable[Any], size: int, sha256: str,
             headers: Mapping[str, str], answered: tuple[int, ...] = ()) -> urllib3.BaseHTTPResponse:
        """The signed PUT; an error answer raises (S3Error & co.) unless its status is in ``answered``."""
        extra = {"Content-Length": str(size), "Content-Type": "application/octet-stream",
                 "x-amz-sdk-checksum-algorithm": "SHA256",
                 "x-amz-checksum-sha256": base64.b64encode(bytes.fromhex(sha256)).decode(), **headers}
        path = f"/{bucket}/{quote(key, safe='/~')}"
        signed = self._sign("PUT", path, "", extra, sha256, self._region(bucket))
        response = self.http.urlopen("PUT", f"{self.scheme}://{self.host}{path}", body=body,
                                     headers=signed, retries=False, redirect=False, preload_content=True)
        if response.status not in answered:
            _raise_for(response, bucket, key)
        return response

    def _region(self, bucket: str) -> str:
        if self.region:
            return self.region
        if bucket not in self._regions:
            path = f"/{bucket}"
            signed = self._sign("GET", path, "location=", {}, _EMPTY_SHA256, "us-east-1")
            response = self.http.urlopen("GET", f"{self.scheme}://{self.host}{path}?location=", headers=signed,
                                         redirect=False, preload_content=True)
            _raise_for(response, bucket, "")
            text = (ET.fromstring(response.data.decode()).text or "").strip() if response.data else ""
            self._regions[bucket] = text or "us-east-1"
        return self._regions[bucket]

    def _sign(self, method: str, path: str, query: str, headers: Mapping[str, str], content_sha256: str,
              region: str) -> dict[str, str]:
        date = datetime.now(timezone.utc).replace(tzinfo=None)
        full = {"Host": self.host, "x-amz-date": date.strftime("%Y%m%dT%H%M%SZ"),
                "x-amz-content-sha256": content_sha256, **headers}
        if self.credentials.session_token:
            full["X-Amz-Security-Token"] = self.credentials.session_token
        url = SplitResult(self.scheme, self.host, path, query, "")
        return dict(sign_v4_s3(method=method, url=url, region=region, headers=full,  # type: ignore[arg-type]
                               credentials=self.credentials, content_sha256=content_sha256, date=date))


def _body(source: SizedReader, size: int) -> Iterator[bytes]:
    """``size`` bytes of ``source``; before the last piece goes out, the source must be at its end (a failure
    of the source, or of its own checks, then drops the request before the server could complete it)."""
    left = size
    while left > 0:
        data = source.read(min(CHUNK, left))        # SizedReader: an early end raises InvalidArgument
        if not data:
            raise InvalidArgument(f"the stream ended after {size - left} of {size} bytes")
        left -= len(data)
        if left == 0 and source.read(1):            # too long: SizedReader raises; a plain stream lands here
            raise InvalidArgument(f"the stream is longer than the declared size {size}")
        yield data


def _raise_for(response: urllib3.BaseHTTPResponse, bucket: str, key: str) -> None:
    if 200 <= response.status < 300:
        return
    kind = response.headers.get("Content-Type", "")
    if response.data and "xml" in kind:
        raise S3Error.fromxml(response)
    if response.status >= 500:
        raise ServerError(f"server failed with HTTP {response.status} for {bucket}/{key}", response.status)
    raise InvalidResponseError(response.status, kind, response.data.decode(errors="replace")[:200])
