"""Stored access policies (signed identifiers) of containers, queues and tables as JSON, and back: each policy's
id, permission, start and expiry, as the service returned them. The container's public access level travels in
the container record beside them."""
from __future__ import annotations

from datetime import datetime
from typing import Callable

from azure.data.tables import TableAccessPolicy
from azure.storage.blob import AccessPolicy as BlobAccessPolicy
from azure.storage.queue import AccessPolicy as QueueAccessPolicy


def _when(value: object) -> str | None:
    if value is None or value == "":
        return None
    return value.isoformat() if isinstance(value, datetime) else str(value)


def encode(identifiers: object) -> list[dict]:
    """Policies from a ``get_*_access_policy`` answer: the blob SDK's list of SignedIdentifier, or the queue and
    table SDKs' mapping of id to policy (None: an identifier without a policy)."""
    pairs = identifiers.items() if isinstance(identifiers, dict) else \
        ((i.id, i.access_policy) for i in (identifiers or []))
    return [{"id": str(ident), "permission": getattr(p, "permission", None), "start": _when(getattr(p, "start", None)),
             "expiry": _when(getattr(p, "expiry", None))} for ident, p in pairs]


def _time(value: object) -> datetime | str | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)           # the service's own text: passed back unchanged


def _decode(records: list | None, make: Callable) -> dict:
    out = {}
    for r in records or []:
        if not isinstance(r, dict) or not isinstance(r.get("id"), str):
            raise ValueError("a stored access policy without an id")
        out[r["id"]] = make(permission=r.get("permission"), start=_time(r.get("start")), expiry=_time(r.get("expiry")))
    return out


def for_container(records: list | None) -> dict:
    return _decode(records, BlobAccessPolicy)


def for_queue(records: list | None) -> dict:
    return _decode(records, QueueAccessPolicy)


def for_table(records: list | None) -> dict:
    return _decode(records, TableAccessPolicy)
