"""Artifact records (``KEY.record.json``): what one stored artifact is, signed by the worker that stored it.

A record holds the artifact's key, its plaintext size and SHA-256 and the size and SHA-256 of its stored
bytes (header, segments, trailer), and optionally the producer's ``metadata`` (a database backup's LSNs,
server version, start and finish times, copy-only flag, stripe). Its signature (``workers.storage.signing``) binds the record's own store
key, so a record — and with it the artifact — copied to another key is refused, as is one whose ``key``
field names another key.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Literal

from workers.runtime.errors import PermanentError
from workers.storage.codec import IntegrityError
from workers.storage.base import ObjectNotFound, StorageBackend
from workers.storage.signing import SIGNATURE_FIELD, SignatureError, canonical, trust_of

RECORD_SUFFIX = ".record.json"
ENCRYPTED_ONLY = "secrets"          # the component whose artifacts are never read unencrypted
MAX_RECORD_BYTES = 1024 * 1024


@dataclass(frozen=True)
class StoredArtifact:
    key: str
    plaintext_size: int
    plaintext_sha256: str | None      # None: not hashed as a whole (a pack: its blobs carry their SHA-256)
    stored_size: int
    stored_sha256: str
    compressed: bool
    encrypted: bool
    thumbprint: str | None
    verified_by: Literal["stat", "read-back"]
    stored_at: str
    object_modified: str | None = None   # the object's modified time when it was verified (detects rewrites)
    deduplicated: bool = False
    metadata: dict | None = None         # the producer's facts (database backups: LSNs, version, times, stripes)

    def to_json(self) -> bytes:
        data = asdict(self)
        data.pop("deduplicated")
        if data["metadata"] is None:
            data.pop("metadata")         # records without metadata keep their old form
        return json.dumps(data, sort_keys=True).encode()


def encrypted_only(key: str) -> bool:
    """``<stamp>/secrets/<version>/…`` and ``<stamp>/<set>/secrets/…``: secrets are always encrypted."""
    parts = key.split("/")
    return ENCRYPTED_ONLY in parts[1:3] and len(parts) >= 3


class OverwriteError(PermanentError):
    default_hint = ("An event tried to overwrite a stored artifact with different content; stored keys are "
                    "write-once. Find out who published it (a replayed or forged event?); the stored artifact "
                    "is unchanged.")


def read_record(backend: StorageBackend, key: str, *, verify: bool = True,
                required: bool = False) -> StoredArtifact | None:
    """The record of ``key`` (None if there is none), its signature checked (``verify``) by the backend's
    Trust; SignatureError when unsigned, forged or moved, IntegrityError when it is not a record."""
    try:
        with backend.open(key + RECORD_SUFFIX) as stream:
            data = json.loads(stream.read(MAX_RECORD_BYTES))
        if not isinstance(data, dict):
            raise ValueError
        if verify:
            trust_of(backend).check(key + RECORD_SUFFIX, hashlib.sha256(canonical(data)).digest(),
                                    data.get(SIGNATURE_FIELD), what="artifact record", required=required)
        data.pop(SIGNATURE_FIELD, None)
        rec = StoredArtifact(**data)
    except ObjectNotFound:
        return None
    except (ValueError, TypeError):
        raise IntegrityError(f"the record of {key} is not a valid artifact record") from None
    if rec.key != key:
        raise SignatureError(f"the record stored for {key} describes {rec.key}: it was moved from another key")
    return rec


def record_body(backend: StorageBackend, artifact: StoredArtifact) -> bytes:
    """The record's JSON, signed by the backend's Trust (unsigned without a signing key)."""
    signed = trust_of(backend).sign_json(artifact.key + RECORD_SUFFIX, json.loads(artifact.to_json()))
    return json.dumps(signed, sort_keys=True).encode()
