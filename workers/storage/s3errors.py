"""What an S3 failure means to a store: the minio SDK's and urllib3's exceptions (S3 error codes, HTTP statuses,
TLS and connection failures) translated into :mod:`workers.storage.base` errors, each with a hint naming the
settings to check."""
from __future__ import annotations

from minio.error import InvalidResponseError, S3Error, ServerError
from urllib3.exceptions import HTTPError, MaxRetryError, SSLError

from workers.storage.base import (InvalidArgument, ObjectNotFound, StorageError, StorageFull, StorageMisconfigured,
                                  StoragePermissionDenied, StorageUnavailable)

_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                "InvalidSecurity", "TokenRefreshRequired"}
_DENIED = {"AccessDenied", "AllAccessDisabled", "AccountProblem", "InvalidObjectState"}
_MISCONFIGURED = {"AuthorizationHeaderMalformed", "IllegalLocationConstraintException", "PermanentRedirect",
                  "InvalidBucketName", "InvalidRegion", "RequestTimeTooSkewed", "BucketAlreadyExists"}
_FULL = {"QuotaExceeded", "XMinioStorageFull", "XMinioAdminBucketQuotaExceeded"}
_TRANSIENT = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "OperationAborted",
              "XMinioServerNotInitialized", "TemporaryRedirect", "Throttling"}


def missing_bucket(exc: BaseException) -> bool:
    """Whether ``exc`` says the bucket does not exist (NoSuchBucket)."""
    return isinstance(exc, S3Error) and exc.code == "NoSuchBucket"


def translate(exc: BaseException, verb: str, key: str, *, name: str, endpoint: str,
              bucket: str) -> StorageError | None:
    """The storage error for ``exc``, raised while the store ``name`` (bucket ``bucket`` at ``endpoint``) tried to
    ``verb`` ``key``; None when ``exc`` is not a failure of S3 or of the way to it."""
    where = f"{name} at {endpoint}: cannot {verb}{f' {key!r}' if key else ''}"
    creds = ("Check APPSVC_DR_STORE__S3_ACCESS_KEY and APPSVC_DR_STORE__S3_SECRET_KEY (a key pair valid "
             f"for {endpoint})")
    if isinstance(exc, S3Error):
        code, status = exc.code or "", getattr(exc.response, "status", 0) or 0
        message = f"{where}: {code or status} ({exc.message})"
        if code in ("NoSuchKey", "NoSuchVersion"):
            return ObjectNotFound(f"{name}: no object {key!r}")
        if code == "NoSuchBucket":
            return StorageMisconfigured(message, hint=f"Bucket {bucket!r} does not exist: fix "
                                        "APPSVC_DR_STORE__S3_BUCKET or create the bucket.")
        if code in _CREDENTIALS:
            return StoragePermissionDenied(message, hint=f"{creds}; the server rejected them.")
        if code in _DENIED or (status == 403 and code not in _MISCONFIGURED):
            return StoragePermissionDenied(message, hint=(
                f"{creds}, and that the key may get/put/list/delete objects in bucket {bucket!r}."))
        if code in _MISCONFIGURED or status in (301, 307):
            return StorageMisconfigured(message, hint=(
                "Check APPSVC_DR_STORE__S3_ENDPOINT, APPSVC_DR_STORE__S3_REGION and APPSVC_DR_STORE__S3_BUCKET "
                "(and the worker's clock)."))
        if code in _FULL:
            return StorageFull(message, hint=f"Bucket {bucket!r} is over quota or the S3 server is full: "
                                             "raise the quota or prune old recovery points.")
        if code in _TRANSIENT or status >= 500 or status == 429:
            return StorageUnavailable(message)
        return InvalidArgument(message, hint="The S3 server rejected the request; see the message for the "
                                             "code (for example EntityTooLarge: lower the object size).")
    if isinstance(exc, ServerError):
        return StorageUnavailable(f"{where}: HTTP {exc.status_code}")
    if isinstance(exc, InvalidResponseError):
        return StorageMisconfigured(f"{where}: {exc}", hint=(
            "The server did not answer like S3: check APPSVC_DR_STORE__S3_ENDPOINT (host:port of the S3 API, "
            "not a console) and APPSVC_DR_STORE__S3_SECURE."))
    reason = exc.reason if isinstance(exc, MaxRetryError) else exc
    if isinstance(reason, SSLError):
        return StorageMisconfigured(f"{where}: TLS failed ({reason})", hint=(
            "Check APPSVC_DR_STORE__S3_SECURE (https vs http) and that the server certificate is trusted "
            "(SSL_CERT_FILE names a CA bundle)."))
    if isinstance(exc, (HTTPError, OSError)):
        return StorageUnavailable(f"{where}: {type(reason).__name__}: {reason}", hint=(
            f"Check that the S3 endpoint {endpoint} (APPSVC_DR_STORE__S3_ENDPOINT) is up and reachable; "
            "the job is retried with backoff."))
    return None
