"""A target's retention of the data backup sets share, outside any set's folder — without any private key.

**Function Apps blob packs** (``<stamp>/functions-blobs/<account>/``): each set's ``index/<set>.json`` (compressed,
never encrypted, with a record) names the pack of every blob of that set. A set a store no longer holds
(deleted by its retention) is *dropped*: its index and summary go, and so does every pack that only dropped
sets' indexes name. A pack no index names (a backup still storing) is never touched.

**File-share repository** (``<stamp>/fileshare/``): a snapshot manifest is encrypted, so which packs a snapshot
needs is not readable here. What is: each snapshot's summary names its backup set. A snapshot of a dropped set
is forgotten (manifest and summary). Packs and index objects follow the primary's own prune (which read the
manifests): on a target, one the primary no longer holds is deleted only when (1) every snapshot the target
keeps is also on the primary (the primary's prune kept whatever those need), (2) no index object on the
primary lists it (a pack gone from the primary while its index still lists it was lost, not pruned: the target
keeps it and says so), and (3) the target holds all the primary's index objects and packs (the caller runs this
only when nothing is missing). While a target keeps snapshots the primary forgot (a longer policy: keep 7
locally, 30 off-site), it keeps every pack: a snapshot it keeps never loses a pack it references.

Fail closed where signatures are checked (the worker's Trust is attached to the primary and each target): an
index, summary or Function Apps index that is unsigned, forged or damaged is read as unknown, never as "names
nothing". A snapshot whose summary cannot be trusted is never dropped and counts as one the target keeps; an
index object on the primary that cannot be trusted stops every pack and index deletion (which packs it lists is
not known); a Function Apps index that cannot be trusted keeps everything of its account.

Objects under S3 Object Lock are never deleted: they are reported with the date they become deletable (the
first run after it deletes them).
"""
from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime

from workers.artifacts.functionspacks import FOLDER as FUNCTIONS
from workers.artifacts.service import RECORD_SUFFIX, ArtifactStore
from workers.artifacts.setscan import scan_sets
from workers.repository.repo import Repository
from workers.runtime.errors import PermanentError
from workers.storage.base import ObjectNotFound, StorageBackend, locked_until
from workers.storage.codec import IntegrityError

log = logging.getLogger("appsvc_dr.mirror.shared")
FILESHARE = "fileshare"


def _base(key: str) -> str:
    return key[:-len(RECORD_SUFFIX)] if key.endswith(RECORD_SUFFIX) else key


def _meta(backend: StorageBackend) -> ArtifactStore:
    return ArtifactStore(backend, certificate=None)


def _json(meta: ArtifactStore, key: str) -> dict | None:
    out = io.BytesIO()
    try:
        meta.get(key, out)
        body = json.loads(out.getvalue())
    except (ObjectNotFound, PermanentError, IntegrityError, ValueError) as exc:
        log.warning("cannot read %s on %s: %s", key, meta.backend.name, getattr(exc, "message", exc))
        return None
    return body if isinstance(body, dict) else None


def dropped_functions(backend: StorageBackend, stamp: str, dropped: set[str]) -> set[str]:
    """Keys under ``functions-blobs/`` that only sets in ``dropped`` need (their index, summary, and packs no
    other set's index names). An unreadable index counts as naming everything (nothing of its account goes)."""
    out: set[str] = set()
    meta = _meta(backend)
    accounts: dict[str, list[str]] = {}
    for info in backend.list(f"{stamp}/{FUNCTIONS}/"):
        parts = info.key.split("/")
        if len(parts) == 5:
            accounts.setdefault(parts[2], []).append(info.key)
    for account, keys in accounts.items():
        prefix = f"{stamp}/{FUNCTIONS}/{account}/"
        sets = {k[len(prefix) + 6:-5] for k in keys if k.startswith(prefix + "index/") and k.endswith(".json")
                and not k.endswith(RECORD_SUFFIX)}
        gone = sets & dropped
        if not gone:
            continue
        named: dict[str, set[str]] = {}
        for set_id in sets:
            body = _json(meta, f"{prefix}index/{set_id}.json")
            if body is None:
                break
            named[set_id] = {e[1] for e in body.get("blobs", {}).values() if isinstance(e, list) and len(e) > 1}
        else:
            live = set().union(*(named[s] for s in sets - gone))
            only_dropped = set().union(*(named[s] for s in gone)) - live
            for key in keys:
                base = _base(key)
                if base in only_dropped or any(base == f"{prefix}{f}/{s}.json" for s in gone
                                               for f in ("index", "summary")):
                    out.add(key)
    return out


def snapshots_of_sets(backend: StorageBackend, stamp: str) -> dict[str, str | None]:
    """Snapshot id -> its backup set (from its summary), for every snapshot of the stamp's repository."""
    repo = Repository(_meta(backend), stamp)
    return {s["snapshot_id"]: s.get("backup_set_id") for s in repo.summaries() if "snapshot_id" in s}


def dropped_snapshots(backend: StorageBackend, stamp: str, dropped: set[str]) -> set[str]:
    """Keys of the snapshots (manifest, summary, records) of sets in ``dropped``."""
    doomed = {s for s, set_id in snapshots_of_sets(backend, stamp).items() if set_id in dropped}
    prefix = f"{stamp}/{FILESHARE}/snapshots/"
    return {i.key for i in backend.list(prefix) if i.key[len(prefix):].split(".")[0] in doomed}


@dataclass
class SharedPlan:
    delete: list[str] = field(default_factory=list)
    locked: dict[str, datetime] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def plan_target(primary: StorageBackend, target: StorageBackend, stamp: str) -> SharedPlan:
    """What a target can delete of the shared data now that its retention deleted some sets."""
    plan = SharedPlan()
    held = set(scan_sets(target, stamp))
    fileshare = f"{stamp}/{FILESHARE}/"
    there = {i.key for i in target.list(fileshare)}
    snapshots = snapshots_of_sets(target, stamp) if there else {}
    dropped = {s for s in snapshots.values() if s and s not in held}
    dropped |= _function_sets(target, stamp) - held
    _lockable(target, sorted(dropped_functions(target, stamp, dropped) | dropped_snapshots(target, stamp, dropped)),
              plan)
    # a snapshot that stays (kept, or locked) keeps every pack: only one whose objects all go counts as gone
    going = {k[len(fileshare) + len("snapshots/"):].split(".")[0] for k in plan.delete
             if k.startswith(f"{fileshare}snapshots/")}
    stuck = {k[len(fileshare) + len("snapshots/"):].split(".")[0] for k in plan.locked
             if k.startswith(f"{fileshare}snapshots/")}
    kept = {s for s in set(snapshots) | _summarized(there, fileshare) if s not in going or s in stuck}
    plan.delete = [k for k in plan.delete if not (k.startswith(f"{fileshare}snapshots/") and
                                                  k[len(fileshare) + len("snapshots/"):].split(".")[0] in stuck)]
    orphans = _orphans(primary, stamp, there, kept, plan) if there else set()
    _lockable(target, _pack_order(orphans, fileshare), plan)
    return plan


def _summarized(keys: set[str], fileshare: str) -> set[str]:
    """Snapshot ids with a summary in a listing, whether or not it can be read or trusted."""
    folder = f"{fileshare}snapshots/"
    return {k[len(folder):-len(".summary.json")] for k in keys
            if k.startswith(folder) and k.endswith(".summary.json")}


def _function_sets(backend: StorageBackend, stamp: str) -> set[str]:
    out = set()
    for info in backend.list(f"{stamp}/{FUNCTIONS}/"):
        parts = info.key.split("/")
        if len(parts) == 5 and parts[3] == "index" and parts[4].endswith(".json") and \
                not parts[4].endswith(RECORD_SUFFIX):
            out.add(parts[4][:-5])
    return out


def _orphans(primary: StorageBackend, stamp: str, there: set[str], kept: set[str], plan: SharedPlan) -> set[str]:
    fileshare = f"{stamp}/{FILESHARE}/"
    on_primary = {i.key for i in primary.list(fileshare)}
    gone = {k for k in there if _base(k) not in on_primary and k.startswith((f"{fileshare}packs/",
                                                                               f"{fileshare}index/"))}
    if not gone:
        return set()
    extra = kept - set(snapshots_of_sets(primary, stamp))
    if extra:
        plan.notes.append(f"{len(gone)} pack/index object(s) the primary pruned are kept: this copy keeps "
                          f"{len(extra)} snapshot(s) the primary forgot ({', '.join(sorted(extra)[:3])}), which "
                          "may need them")
        return set()
    index = Repository(_meta(primary), stamp).load_index()
    listed = {k[len(f"{fileshare}index/"):] for k in on_primary if k.startswith(f"{fileshare}index/")
              and not k.endswith(RECORD_SUFFIX)}                   # what load_index reads
    unread = {name for name in listed if "/" not in name} - index.objects
    if unread:
        plan.notes.append(f"{len(gone)} pack/index object(s) the primary pruned are kept: {len(unread)} index "
                          f"object(s) on the primary cannot be read or trusted ({', '.join(sorted(unread)[:3])}), "
                          "so which packs are still needed is not known")
        return set()
    indexed = {pack for pack, _, _ in index.blobs.values()}
    lost = {k for k in gone if k.startswith(f"{fileshare}packs/") and _base(k)[len(f"{fileshare}packs/"):] in indexed}
    if lost:
        plan.notes.append(f"{len(lost)} pack(s) are gone from the primary although its index lists them (lost, "
                          "not pruned): kept on this copy — restore from it")
    return gone - lost


def _pack_order(keys: set[str], fileshare: str) -> list[str]:
    """Index objects first (the index never lists a pack that is gone), then each pack's record before it."""
    return sorted(keys, key=lambda k: (k.startswith(f"{fileshare}packs/"), _base(k), not k.endswith(RECORD_SUFFIX)))


def _lockable(target: StorageBackend, keys: list[str], plan: SharedPlan) -> None:
    for key in keys:
        until = locked_until(target, [key])
        if until is not None:
            plan.locked[key] = until
        else:
            plan.delete.append(key)


def apply_target(primary: StorageBackend, target: StorageBackend, stamp: str) -> SharedPlan:
    plan = plan_target(primary, target, stamp)
    for key in plan.delete:
        try:
            target.delete(key)
        except ObjectNotFound:
            continue
    return plan
