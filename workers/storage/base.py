"""The narrow storage interface every backend implements, its errors, and key / metadata validation.

Keys are '/'-separated relative strings (``stamp1/2026-11-21/db/orders.bak.zst``). Backends classify their
failures where they happen: :class:`StorageUnavailable` is transient (retry with backoff); every other
:class:`StorageError` is permanent and carries a how-to-fix hint naming the setting to change.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO, ContextManager, Iterable, Iterator, Mapping, Protocol, runtime_checkable

from workers.runtime.errors import PermanentError, TransientError

# Names local and SMB backends use next to objects; list() never shows them and keys may not use them.
PARTIAL_MARK = ".partial-"          # <name>.partial-<uuid>: an upload in progress (or abandoned by a crash)
META_SUFFIX = ".drmeta"             # <name>.drmeta: JSON sidecar holding the object's user metadata
MAX_KEY_LENGTH = 1024
MAX_METADATA_BYTES = 2048           # S3's limit for user metadata; enforced everywhere so all backends agree

# Metadata of an object its writer deletes soon (a repository lock): never given an S3 Object Lock retention.
UNLOCKED = {"dr-lock": "none"}
_BAD_KEY_CHARS = re.compile(r'[\x00-\x1f\x7f\\:*?"<>|]')   # control chars and what Windows/SMB refuses
_META_KEY = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")       # HTTP-header safe, survives S3's lower-casing
_META_VALUE = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$")  # printable ASCII, no outer spaces


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime                      # timezone-aware, UTC
    metadata: dict[str, str] = field(default_factory=dict)      # from stat()/put(); list() leaves it empty
    etag: str | None = None                 # S3 only
    retain_until: datetime | None = None    # S3 Object Lock: the object cannot be deleted before this (stat only)


@runtime_checkable
class StorageBackend(Protocol):
    """put (stream in) / open (stream out) / stat / list / delete / exists / close, plus capability flags.

    * ``put`` streams ``stream`` to ``key``; readers never see a partial object under ``key`` (temp name +
      rename, or an S3 upload that only appears on completion). ``size``, when given, is checked.
      ``sha256``, when given, is the hex SHA-256 of the stream's bytes, already computed by the caller: S3
      signs it as the payload hash (the server checks the body) instead of hashing the bytes again.
    * ``open`` is a context manager yielding a readable binary stream; the connection is released on exit.
    * ``stat`` raises :class:`ObjectNotFound`; ``list`` is recursive and sorted by key and does not load
      user metadata (use ``stat``); ``delete`` of a missing key is not an error.
    * ``close`` releases the backend's connections (an SMB session is logged off, an S3 HTTP pool emptied; a
      local store has nothing to release). It is idempotent, and a backend used again after it reconnects.
      Whoever builds a backend closes it (``contextlib.closing`` where a ``with`` block fits).
    """

    name: str               # e.g. "s3://bucket", "smb://host/share/dir", "file:///srv/store" - never credentials
    atomic_rename: bool     # the backend writes a temporary name and renames it into place

    def put(self, key: str, stream: BinaryIO, size: int | None = None,
            metadata: dict[str, str] | None = None, *, sha256: str | None = None) -> ObjectInfo: ...

    def open(self, key: str) -> ContextManager[BinaryIO]: ...

    def stat(self, key: str) -> ObjectInfo: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...

    def close(self) -> None: ...


@runtime_checkable
class ExclusiveCreate(Protocol):
    """An optional capability: ``put_new`` writes a small object only if ``key`` does not exist yet, atomically
    across processes and hosts (the first writer wins, every later one gets :class:`ObjectExists`). Claims that
    must be won exactly once (a schedule slot) use it; a backend without it leaves callers to check-then-write
    and tolerate a rare race. ``metadata`` is what ``put`` takes (a local or SMB store keeps none for it: only
    S3 acts on it, to leave a pruned object without its Object Lock retention)."""

    def put_new(self, key: str, body: bytes, metadata: dict[str, str] | None = None) -> ObjectInfo: ...


# --------------------------------------------------------------------------------------------- errors
class StorageError(Exception):
    """Mixin marking every error a storage backend raises (``except StorageError``)."""


class ObjectNotFound(StorageError, PermanentError):
    default_hint = ("The object does not exist in the store: check the key, and whether it was deleted by "
                    "retention or written to a different store (APPSVC_DR_STORE__KIND and its location setting).")


class ObjectExists(StorageError, PermanentError):
    default_hint = ("The key is write-once and another writer created it first; nothing was overwritten.")


class StorageUnavailable(StorageError, TransientError):
    default_hint = ("The store could not be reached or failed temporarily; the job is retried with backoff. "
                    "If it persists, check the store's address setting (APPSVC_DR_STORE__S3_ENDPOINT, "
                    "APPSVC_DR_STORE__SMB_PATH / APPSVC_DR_STORE__SMB_PORT or APPSVC_DR_STORE__LOCAL_PATH).")


class StoragePermissionDenied(StorageError, PermanentError):
    default_hint = ("The store refused access: check the credentials (APPSVC_DR_STORE__S3_ACCESS_KEY / "
                    "APPSVC_DR_STORE__S3_SECRET_KEY or APPSVC_DR_STORE__SMB_USERNAME / "
                    "APPSVC_DR_STORE__SMB_PASSWORD) and that they may read, write, list and delete.")


class StorageMisconfigured(StorageError, PermanentError):
    default_hint = ("The store's location does not exist or is not what it should be: check "
                    "APPSVC_DR_STORE__S3_BUCKET, APPSVC_DR_STORE__SMB_PATH or APPSVC_DR_STORE__LOCAL_PATH.")


class StorageFull(StorageError, PermanentError):
    default_hint = ("The store is out of space or over quota: free space or grow the volume/quota behind the "
                    "store, then replay the dead-lettered jobs (`appsvc-dr dlq replay <worker>`).")


class ObjectLocked(StorageError, PermanentError):
    """An object under S3 Object Lock whose retention has not expired: it cannot be deleted yet."""

    default_hint = ("The object is locked (S3 Object Lock) until the date in the message; it can be deleted after "
                    "that date (retention tries again on its next run). Nothing else is needed.")

    def __init__(self, message: str, *, until: datetime, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.until = until


class InvalidArgument(StorageError, PermanentError):
    """A bad key, bad metadata, or a stream that did not deliver the declared size: a caller bug."""

    default_hint = ("Keys are '/'-separated relative names without '..', empty parts, backslashes or "
                    "Windows-reserved characters; metadata keys are lower-case [a-z0-9-], values printable "
                    "ASCII. Fix the producer of this key.")


# ----------------------------------------------------------------------------------------- validation
def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise :class:`InvalidArgument`."""
    _check_path(key, what="key", allow_empty=False)
    if key.endswith("/"):
        raise InvalidArgument(f"invalid key {key!r}: it ends with '/'")
    return key


def validate_prefix(prefix: str) -> str:
    """A list() prefix: a key prefix (may be empty, may end with '/' or in the middle of a name)."""
    if prefix:
        _check_path(prefix[:-1] if prefix.endswith("/") else prefix, what="prefix", allow_empty=True)
    return prefix


def _check_path(value: str, *, what: str, allow_empty: bool) -> None:
    if not isinstance(value, str):
        raise InvalidArgument(f"invalid {what}: expected a string, got {type(value).__name__}")
    if not value:
        if allow_empty:
            return
        raise InvalidArgument(f"invalid {what}: it is empty")
    if len(value.encode("utf-8")) > MAX_KEY_LENGTH:
        raise InvalidArgument(f"invalid {what}: longer than {MAX_KEY_LENGTH} bytes")
    if value.startswith("/"):
        raise InvalidArgument(f"invalid {what} {value!r}: it must be relative (no leading '/')")
    bad = _BAD_KEY_CHARS.search(value)
    if bad:
        raise InvalidArgument(f"invalid {what} {value!r}: character {bad.group()!r} is not allowed")
    for part in value.split("/"):
        if not part:
            raise InvalidArgument(f"invalid {what} {value!r}: empty path part ('//' or trailing '/')")
        if part in (".", ".."):
            raise InvalidArgument(f"invalid {what} {value!r}: '.' and '..' are not allowed")
        if part != part.rstrip(" .") or part != part.lstrip(" "):
            raise InvalidArgument(f"invalid {what} {value!r}: parts may not start with a space or end with "
                                  "a space or '.'")
        if PARTIAL_MARK in part or part.endswith(META_SUFFIX):
            raise InvalidArgument(f"invalid {what} {value!r}: {PARTIAL_MARK!r} and {META_SUFFIX!r} are "
                                  "reserved for the store's temporary and metadata files")


def validate_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Return a plain copy of ``metadata`` if every backend can round-trip it, else raise InvalidArgument."""
    result: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not _META_KEY.match(key):
            raise InvalidArgument(f"invalid metadata key {key!r}: use 1-128 lower-case letters, digits or '-'")
        if not isinstance(value, str) or not _META_VALUE.match(value):
            raise InvalidArgument(f"invalid metadata value for {key!r}: non-empty printable ASCII without "
                                  "leading or trailing spaces")
        result[key] = value
    if sum(len(k) + len(v) for k, v in result.items()) > MAX_METADATA_BYTES:
        raise InvalidArgument(f"metadata is larger than {MAX_METADATA_BYTES} bytes: keep it to a few short "
                              "labels and put the rest in the object")
    return result


def locked_until(backend: object, keys: Iterable[str]) -> datetime | None:
    """When the last of ``keys`` may be deleted, if ``backend`` locks objects (S3 Object Lock) and one of them is
    still locked; None otherwise (no lock, expired, or a backend without Object Lock). Whoever deletes asks
    first: a locked object is never tried (S3 would only hide it behind a delete marker)."""
    check = getattr(backend, "locked_until", None)
    if check is None or getattr(backend, "lock_mode", None) is None:
        return None
    return max((d for d in map(check, keys) if d is not None), default=None)


def is_hidden_name(name: str) -> bool:
    """True for a backend's own temporary or sidecar files (never listed as objects)."""
    return PARTIAL_MARK in name or name.endswith(META_SUFFIX)
