"""One S3 PUT of an object already in memory as pieces (an encoded pack: the artifact format's header, records and
trailer), sent one after another: no joined copy of the whole, and no second SHA-256 of it.

``minio``'s ``put_object`` needs the body as one ``bytes`` object and, over plain HTTP, hashes it again to sign it
(over HTTPS it computes an MD5 instead); the public API has no way to pass a hash the caller already has. Here
the request is signed (AWS Signature V4, ``minio.signer.sign_v4_s3``, a public function of the SDK) with the
SHA-256 of the stored bytes the encoder computed anyway, as ``x-amz-content-sha256``: the server checks the body
against it, and against the same value in ``x-amz-checksum-sha256``. The body goes through the store's own
``urllib3`` pool (its public ``request``; a known Content-Length, so not chunked).
"""
from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Any, Sequence
from urllib.parse import quote, urlsplit

import urllib3
from minio.credentials import Credentials
from minio.error import S3Error
from minio.signer import sign_v4_s3
from minio.time import to_amz_date


def signed_put(http: urllib3.PoolManager, *, secure: bool, endpoint: str, region: str, bucket: str, key: str,
               pieces: Sequence[Any], size: int, sha256: str, headers: dict[str, str],
               credentials: Credentials | None) -> urllib3.BaseHTTPResponse:
    """PUT ``pieces`` (``size`` bytes whose SHA-256 is ``sha256``) as ``bucket/key``, path-style; raises S3Error
    for an S3 error answer (the caller translates it, as it does minio's)."""
    url = urlsplit(f"{'https' if secure else 'http'}://{endpoint}/{bucket}/{quote(key, safe='/')}")
    date = datetime.now(timezone.utc)
    headers = {**headers, "Host": url.netloc, "Content-Type": "application/octet-stream",
               "Content-Length": str(size), "x-amz-date": to_amz_date(date), "x-amz-content-sha256": sha256,
               "x-amz-sdk-checksum-algorithm": "SHA256",
               "x-amz-checksum-sha256": base64.b64encode(bytes.fromhex(sha256)).decode()}
    if credentials is not None:
        if credentials.session_token:
            headers["X-Amz-Security-Token"] = credentials.session_token
        headers = sign_v4_s3(method="PUT", url=url, region=region, headers=headers, credentials=credentials,
                             content_sha256=sha256, date=date)
    response = http.request("PUT", url.geturl(), body=list(pieces), headers=headers, chunked=False,
                            preload_content=True, redirect=False)
    if response.status // 100 != 2:
        if response.data:
            raise S3Error.fromxml(response)
        raise S3Error(response=response, code=f"HTTP{response.status}", message=response.reason or "",
                      resource=key, request_id=None, host_id=None, bucket_name=bucket, object_name=key)
    return response
