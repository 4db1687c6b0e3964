"""S3's wire form of what a store reports: user metadata as x-amz-meta-* headers, the dates in S3's answers
(Date headers, ISO retain-until dates, naive or zoned datetimes) as UTC, and the ObjectInfo of a stat answer
and of what a signed single PUT landed."""
from __future__ import annotations

import email.utils
from datetime import datetime, timezone
from typing import Any

import urllib3
from minio.datatypes import Object

from workers.storage.base import ObjectInfo

META_PREFIX = "x-amz-meta-"


def accepted(key: str, size: int, meta: dict[str, str], response: urllib3.BaseHTTPResponse) -> ObjectInfo:
    """What a signed single PUT landed: the server accepted exactly these bytes against their SHA-256, so no HEAD
    asks. ``modified`` is the server's time of the answer (its Date header), not a Last-Modified."""
    return ObjectInfo(key=key, size=size, modified=answered(response.headers), metadata=meta,
                      etag=(response.headers.get("ETag") or "").strip('"') or None)


def stated(key: str, obj: Object) -> ObjectInfo:
    """The ObjectInfo of a stat (HEAD) answer ``obj``: user metadata from its x-amz-meta-* headers, and its Object
    Lock retain-until date."""
    metadata = {k.lower()[len(META_PREFIX):]: v for k, v in (obj.metadata or {}).items()
                if k.lower().startswith(META_PREFIX)}
    until = (obj.metadata or {}).get("x-amz-object-lock-retain-until-date")
    return ObjectInfo(key=key, size=int(obj.size or 0), modified=utc(obj.last_modified),
                      metadata=metadata, etag=obj.etag, retain_until=iso(until) if until else None)


def meta_headers(meta: dict[str, str]) -> dict[str, str]:
    return {META_PREFIX + k: v for k, v in meta.items()}


def answered(headers: Any) -> datetime:
    try:
        return utc(email.utils.parsedate_to_datetime(headers.get("Date")))
    except (TypeError, ValueError, AttributeError):
        return datetime.now(timezone.utc)


def iso(value: str) -> datetime | None:
    try:
        return utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


def utc(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(timezone.utc)
    return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
