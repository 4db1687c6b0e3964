"""What one event names, as folders under ``<stamp>/`` (``PrimaryView.scope``): the mirror copies those, not the
whole stamp, per event. Every field is checked (the event is not trusted): a key outside its stamp, a set id
or an account that is no name gives no scope, and the event falls back to a full reconciliation of the stamp.

* ``artifact-stored``: the artifact's set (``<stamp>/<set>/``), or the artifact's folder when it is not in a set;
  for Function Apps (``functions/<account>.jsonl``) also the account's packs, index and summary
  (``<stamp>/functions-blobs/<account>/``);
* ``secrets-stored``: ``<stamp>/secrets/`` (the versions);
* ``fileshare-synced``: the set, the file-share repository's packs and index, and the event's snapshot (not
  the others: a target may have forgotten older ones under its own retention);
* ``backup-set-completed``: the set (its catalog files and completion marker).

An event for a set older than ``old_after`` (a redelivery long after, or a set a target's retention may have
deleted there) gets no scope: the full reconciliation knows each target's retention policy.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from contracts import ArtifactStored, BackupSetCompleted, Envelope, FileshareSynced, SecretsStored
from contracts.envelope import NAME_PATTERN
from workers.artifacts.functionspacks import FOLDER as FUNCTIONS_FOLDER
from workers.artifacts.sets import id_time, set_prefix


def _name(value: str) -> bool:
    return bool(re.match(NAME_PATTERN, value)) and ".." not in value


def event_scope(event: Envelope, old_after: timedelta, now: datetime | None = None) -> tuple[str, ...] | None:
    stamp, set_id = event.stamp, event.correlation_id or ""
    if not _name(stamp) or not _name(set_id):
        return None
    when = id_time(set_id)
    if when is None or (now or datetime.now(timezone.utc)) - when > old_after:
        return None
    own = set_prefix(stamp, set_id)
    if isinstance(event, BackupSetCompleted):
        return (own,)
    if isinstance(event, FileshareSynced):
        snapshot = event.payload.snapshot_id
        if not _name(snapshot):
            return None
        return (own, f"{stamp}/fileshare/index/", f"{stamp}/fileshare/packs/",
                f"{stamp}/fileshare/snapshots/{snapshot}.")
    if isinstance(event, SecretsStored):
        return (f"{stamp}/secrets/",) if event.payload.key.startswith(f"{stamp}/secrets/") else None
    if isinstance(event, ArtifactStored):
        return _artifact(event, stamp, own)
    return None


def _artifact(event: ArtifactStored, stamp: str, own: str) -> tuple[str, ...] | None:
    key = event.payload.key
    if not key.startswith(f"{stamp}/") or ".." in key.split("/") or "//" in key:
        return None
    scope = (own,) if key.startswith(own) else (key.rpartition("/")[0] + "/",)
    name = event.payload.name
    if event.payload.component == "functions" and name.endswith(".jsonl") and _name(name[:-len(".jsonl")]):
        scope += (f"{stamp}/{FUNCTIONS_FOLDER}/{name[:-len('.jsonl')]}/",)
    return scope
