"""Stored SystemSecrets.json versions: ``<stamp>/secrets/<version-id>/SystemSecrets.json`` (encrypted).

A version id is ``<rotated-at UTC, to the microsecond>-<first 12 hex of the fingerprint>``, so ids sort by
rotation time, the same rotation event always maps to the same key (idempotent re-runs), and two rotations of
identical content within one second are still told apart (the second is a duplicate, not a re-run).

"Newest" is decided by that date, so a date an outsider chose must never win: a rotation dated in the future
(beyond :data:`CLOCK_SKEW`) is refused at the event, and the "latest" lookup ignores (with a warning) stored
versions dated in the future or whose id is not one this worker writes.
"""
from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from contracts.envelope import FUTURE_SKEW, is_future
from workers.artifacts.setmanifest import artifact_key
from workers.artifacts.service import RECORD_SUFFIX, ArtifactStore, StoredArtifact
from workers.runtime.errors import PermanentError

log = logging.getLogger("appsvc_dr.secrets")
SECRETS_NAME = "SystemSecrets.json"
REFERENCE_NAME = "secrets-version.json"   # in each backup set: which version it holds
ROTATED_AT_FORMAT = "%Y%m%dT%H%M%S%fZ"
VERSION_ID = re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{12}")
CLOCK_SKEW = FUTURE_SKEW                 # how far ahead of this host's clock a rotation may be dated

log = logging.getLogger("appsvc_dr.secrets")


def check_rotated_at(rotated_at: datetime) -> None:
    """Refuse a rotation dated in the future: its version would stay "newest" over every genuine one."""
    now = datetime.now(timezone.utc)
    if is_future(rotated_at, now):
        raise PermanentError(f"secrets-rotated is dated {rotated_at.isoformat()}, in the future (this host's "
                             f"clock says {now:%Y-%m-%dT%H:%M:%SZ}; allowed skew {CLOCK_SKEW})",
                             hint="Fix the clock of the host that published the event (or of this worker), then "
                                  "publish the rotation again with the real time; a future-dated version would "
                                  "hide every genuine one.")


def _is_version_id(vid: str) -> bool:
    try:
        return bool(VERSION_ID.fullmatch(vid)) and bool(datetime.strptime(vid[:22], ROTATED_AT_FORMAT))
    except ValueError:                    # digits that are no date (month 13, ...)
        return False


def version_id(rotated_at: datetime, fingerprint: str) -> str:
    return f"{rotated_at:{ROTATED_AT_FORMAT}}-{fingerprint[:12]}"


def version_key(stamp: str, vid: str) -> str:
    return f"{stamp}/secrets/{vid}/{SECRETS_NAME}"


@dataclass(frozen=True)
class SecretsVersion:
    stamp: str
    version_id: str
    artifact: StoredArtifact

    @property
    def fingerprint(self) -> str:
        return self.artifact.plaintext_sha256

    @property
    def rotated_at(self) -> datetime:
        return datetime.strptime(self.version_id.split("-")[0] + "+0000", ROTATED_AT_FORMAT + "%z")


def versions(store: ArtifactStore, stamp: str) -> list[SecretsVersion]:
    """Every stored version of ``stamp``, oldest first."""
    out = []
    for info in store.backend.list(f"{stamp}/secrets/"):
        if not info.key.endswith(f"/{SECRETS_NAME}{RECORD_SUFFIX}"):
            continue
        key = info.key[:-len(RECORD_SUFFIX)]
        vid = key.split("/")[2]
        if not _is_version_id(vid) or key != version_key(stamp, vid):
            log.warning("ignoring %s: not a secrets version key this worker writes (something else wrote it)", key)
            continue
        record = store.trusted_record(key, "secrets version")   # unsigned / forged / moved: never latest
        if record is not None:
            out.append(SecretsVersion(stamp, vid, record))
    return sorted(out, key=lambda v: v.version_id)


def latest(store: ArtifactStore, stamp: str) -> SecretsVersion | None:
    """The newest stored version not dated in the future (those are skipped with a warning)."""
    for version in reversed(versions(store, stamp)):
        if not is_future(version.rotated_at):
            return version
        log.warning("secrets version %s of %s is dated in the future: ignored (a genuine rotation is never dated "
                    "ahead; or a clock is wrong)", version.version_id, stamp)
    return None


def set_reference(store, stamp: str, set_id: str, keys) -> dict:
    """The secrets reference of a backup set: ``{version_id, key, fingerprint, stamp}`` (decrypted, verified)."""
    key = artifact_key(stamp, set_id, "secrets", REFERENCE_NAME)
    ref = io.BytesIO()
    store.get(key, ref, keys=keys)
    try:
        data = json.loads(ref.getvalue())
    except ValueError:
        data = None
    # Hostile until checked: it must name a version of *this* stamp, at the key such a version has.
    vid = data.get("version_id") if isinstance(data, dict) else None
    if not (isinstance(vid, str) and _is_version_id(vid) and data.get("key") == version_key(stamp, vid)
            and data.get("stamp", stamp) == stamp and isinstance(data.get("fingerprint"), str)
            and re.fullmatch(r"[0-9a-f]{64}", data["fingerprint"]) and data["fingerprint"].startswith(vid[-12:])):
        raise PermanentError(f"{key} does not name a secrets version of stamp {stamp}",
                             hint="The set's secrets reference is damaged or forged: restore the secrets of another "
                                  "set or a version by id (`appsvc-dr secrets list`).")
    return data


def secrets_key(store, stamp: str, keys, *, version: str | None = None, set_id: str | None = None) -> str:
    """The key of the SystemSecrets.json version asked for: by version id, the one of a set, else the newest."""
    if version:
        return version_key(stamp, version)
    if set_id:
        return set_reference(store, stamp, set_id, keys)["key"]
    newest = latest(store, stamp)
    if newest is None:
        raise PermanentError(f"no secrets stored for stamp {stamp}", hint="Check --stamp and the store settings.")
    return newest.artifact.key
