"""Retention for the Function Apps storage copies: the blob packs under ``<stamp>/functions-blobs/<account>/``
are shared by every backup set of the stamp, so deleting a set (retention) frees none of them. This forgets the
index and summary of each deleted set and deletes the packs no remaining index references.

What is kept (fail closed):

* every index whose backup set still exists, and the newest index of each account whatever its set (the next
  backup starts from it and reuses its packs), and every index younger than ``grace`` (a backup that started
  from it may still be running);
* every pack some kept index references, and every pack younger than ``grace`` (a running backup writes its
  packs before its index);
* everything of an account when one of its kept indexes cannot be read or trusted (missing, damaged, unsigned
  or forged while verify keys are configured), or when a remaining set holds the account's manifest but no
  index: the index is the only list of what the set's manifest needs that can be read without the private key,
  so without it nothing of that account is deleted (the problem is reported);
* objects under S3 Object Lock (deleted by a later run once their retention ends).

Indexes go first, then packs (record, then object): a crash leaves unreferenced packs that the next run deletes,
never an index naming a pack that is gone. Only the workers' own folder is touched.
"""
from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterable

from workers.artifacts.service import RECORD_SUFFIX, ArtifactStore
from workers.artifacts.setmanifest import artifact_key
from workers.artifacts.setscan import scan_sets
from workers.runtime.errors import PermanentError
from workers.storage.base import ObjectInfo, ObjectNotFound, locked_until

log = logging.getLogger("appsvc_dr.retention")
COMPONENT = "functions"
FOLDER = "functions-blobs"


def account_prefix(stamp: str, account: str) -> str:
    return f"{stamp}/{FOLDER}/{account}"


@dataclass
class FunctionsPrune:
    stamp: str
    forgotten: list[str] = field(default_factory=list)       # "<account>/<set>" whose index/summary went
    deleted_packs: int = 0
    freed_bytes: int = 0
    kept_packs: int = 0
    locked: list[str] = field(default_factory=list)          # keys kept because of S3 Object Lock
    problems: list[str] = field(default_factory=list)        # accounts left untouched, and why
    dry_run: bool = False


@dataclass
class _Account:
    name: str
    indexes: dict[str, ObjectInfo] = field(default_factory=dict)     # set id -> index object
    summaries: dict[str, ObjectInfo] = field(default_factory=dict)
    packs: dict[str, ObjectInfo] = field(default_factory=dict)       # key -> pack object


def _accounts(store: ArtifactStore, stamp: str) -> dict[str, _Account]:
    base = f"{stamp}/{FOLDER}/"
    found: dict[str, _Account] = {}
    for info in store.backend.list(base):
        if info.key.endswith(RECORD_SUFFIX):
            continue
        parts = info.key[len(base):].split("/")
        if len(parts) != 3 or not all(parts):
            continue
        account = found.setdefault(parts[0], _Account(parts[0]))
        if parts[1] == "packs":
            account.packs[info.key] = info
        elif parts[1] in ("index", "summary") and parts[2].endswith(".json"):
            (account.indexes if parts[1] == "index" else account.summaries)[parts[2][:-5]] = info
    return found


def _referenced(store: ArtifactStore, key: str) -> set[str]:
    """The pack keys an index names; PermanentError when it cannot be read or trusted."""
    out = io.BytesIO()
    store.get(key, out)                                        # record signature checked when keys are configured
    body = json.loads(out.getvalue())
    if not isinstance(body, dict) or body.get("format") != 1 or not isinstance(body.get("blobs"), dict):
        raise PermanentError(f"{key}: not an index of format 1")
    packs = set()
    for entry in body["blobs"].values():
        if not (isinstance(entry, list) and len(entry) == 5 and isinstance(entry[1], str)):
            raise PermanentError(f"{key}: an entry is not [etag, pack, offset, length, sha256]")
        packs.add(entry[1])
    return packs


def _delete(store: ArtifactStore, key: str) -> None:
    for k in (key + RECORD_SUFFIX, key):
        try:
            store.backend.delete(k)
        except ObjectNotFound:
            pass


def prune_functions(store: ArtifactStore, stamp: str, *, grace: timedelta, now: datetime | None = None,
                    dry_run: bool = False, deleted: Iterable[str] = ()) -> FunctionsPrune:
    """Forget the indexes of deleted sets and delete the packs no kept index references (see the module).
    ``deleted``: sets taken as gone although still stored (a dry run of retention names them)."""
    now = now or datetime.now(timezone.utc)
    result = FunctionsPrune(stamp, dry_run=dry_run)
    accounts = _accounts(store, stamp)
    if not accounts:
        return result
    sets = set(scan_sets(store.backend, stamp)) - set(deleted)
    for account in accounts.values():
        _prune_account(store, stamp, account, sets, now - grace, result)
    return result


def _prune_account(store: ArtifactStore, stamp: str, account: _Account, sets: set[str], cutoff: datetime,
                   result: FunctionsPrune) -> None:
    newest = max(account.indexes, default=None)
    keep = {s for s, info in account.indexes.items() if s in sets or s == newest or info.modified > cutoff}
    for set_id in sorted(sets - set(account.indexes)):
        if store.backend.exists(artifact_key(stamp, set_id, COMPONENT, f"{account.name}.jsonl")):
            result.problems.append(f"{account.name}: set {set_id} holds a copy of the account but no index: "
                                   "nothing of the account was deleted")
            return
    needed: set[str] = set()
    for set_id in sorted(keep):
        key = f"{account_prefix(stamp, account.name)}/index/{set_id}.json"
        try:
            needed |= _referenced(store, key)
        except (PermanentError, ObjectNotFound, ValueError) as exc:
            why = getattr(exc, "message", None) or type(exc).__name__
            result.problems.append(f"{account.name}: index of set {set_id} cannot be read or trusted ({why}): "
                                   "nothing of the account was deleted")
            return
    forget = sorted(set(account.indexes) - keep)
    doomed = [k for k, info in sorted(account.packs.items()) if k not in needed and info.modified <= cutoff]
    result.kept_packs += len(account.packs) - len(doomed)
    prefix = account_prefix(stamp, account.name)
    for set_id in forget:
        keys = [f"{prefix}/index/{set_id}.json"] + ([f"{prefix}/summary/{set_id}.json"]
                                                   if set_id in account.summaries else [])
        if locked_until(store.backend, keys) is not None:
            result.locked.extend(keys)
            continue
        result.forgotten.append(f"{account.name}/{set_id}")
        if not result.dry_run:
            for key in keys:
                _delete(store, key)
    for key in doomed:
        if locked_until(store.backend, [key, key + RECORD_SUFFIX]) is not None:
            result.locked.append(key)
            result.kept_packs += 1
            continue
        result.deleted_packs += 1
        result.freed_bytes += account.packs[key].size
        if not result.dry_run:
            _delete(store, key)
    if forget or doomed:
        log.info("functions retention for %s/%s: forgot %d index(es), %s %d unreferenced pack(s) (%d bytes); "
                 "kept %d", stamp, account.name, len(forget), "would delete" if result.dry_run else "deleted",
                 len(doomed), sum(account.packs[k].size for k in doomed), result.kept_packs)


def describe(result: FunctionsPrune) -> list[str]:
    """What a run did (or would do), for the CLI and the catalog's log."""
    verb = "would delete" if result.dry_run else "deleted"
    lines = []
    if result.forgotten or result.deleted_packs:
        lines.append(f"Function Apps storage: forgot {len(result.forgotten)} copy index(es) of deleted sets, {verb} "
                     f"{result.deleted_packs} unreferenced blob pack(s) ({result.freed_bytes} bytes), kept "
                     f"{result.kept_packs}")
    if result.locked:
        lines.append(f"Function Apps storage: {len(result.locked)} object(s) under S3 Object Lock kept, deletable "
                     "later")
    lines.extend(f"Function Apps storage: KEPT everything of {p}" for p in result.problems)
    return lines
