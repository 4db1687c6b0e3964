"""`artifacts list|get|verify` and `retention apply`: the operator's view of the store.

``artifacts list --set S`` shows, under each database backup, what its record says about it (engine and server
version, full / copy-only, first..last LSN and the base LSN, start and finish, stripe i of N); ``--json`` gives
the records' ``metadata`` as stored.

Passwords never travel on the command line: ``--key-password-env VAR`` / ``--pfx-password-env VAR`` name an
environment variable; without one, a password-protected key is asked for interactively (getpass) when
stdin is a terminal.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from workers.artifacts.setmanifest import read_set
from workers.artifacts.functionspacks import describe as describe_functions, prune_functions
from workers.artifacts.retention import apply_retention, format_duration
from workers.artifacts.service import ArtifactStore
from workers.artifacts.sets import COMPLETE, PLAN, SKIPPED, read_marker, read_plan, read_skips, waiting_for
from workers.artifacts.setscan import scan_sets, set_time
from workers.cli.keyopts import add_key_options, keyring_from_args
from workers.cli.output import write_atomically
from workers.cli.progress import MiB, ProgressBar
from workers.cli.snapshots_cmd import duration_arg, print_forget
from workers.config import Settings
from workers.cli.stores import add_store_option, backend_for_reading, chosen_store, writing_backend
from workers.repository.forget import Policy, forget
from workers.repository.repo import Repository
from workers.runtime.errors import ConfigurationError, DrError
from workers.storage.base import ObjectNotFound


def register(sub) -> None:
    p = sub.add_parser("artifacts", help="list, fetch and verify stored artifacts")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("list", help="backup sets of a stamp, or the artifacts of one set")
    _where(a)
    a.add_argument("--json", action="store_true", help="machine-readable output")
    add_store_option(a)
    a.set_defaults(func=list_cmd)
    a = actions.add_parser("get", help="fetch one artifact, decrypted and verified, into a file")
    a.add_argument("artifact_key", metavar="KEY", help="artifact key: <stamp>/<set>/<component>/<name>")
    a.add_argument("--out", required=True, type=Path, help="file (or existing directory) to write")
    add_key_options(a)
    a.set_defaults(func=get_cmd)
    a = actions.add_parser("verify", help="re-read every artifact (decrypting too when keys are given)")
    _where(a)
    add_key_options(a)
    a.set_defaults(func=verify_cmd)
    p = sub.add_parser("retention", help="delete old backup sets")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("apply", help="keep the newest sets, delete the others (see --dry-run)")
    a.add_argument("--stamp", help="stamp (default: APPSVC_DR_STAMP)")
    a.add_argument("--keep-last", type=int, help="complete sets to keep (default: APPSVC_DR_RETENTION__KEEP_LAST)")
    a.add_argument("--keep-within", type=duration_arg, help="also keep sets younger than this, e.g. 30d, 12h "
                   "(default: APPSVC_DR_RETENTION__KEEP_WITHIN)")
    a.add_argument("--dry-run", action="store_true", help="show what would be deleted, delete nothing")
    add_store_option(a)
    a.set_defaults(func=retention_cmd)


def _where(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stamp", help="stamp (default: APPSVC_DR_STAMP)")
    p.add_argument("--set", dest="set_id", help="one backup set id")


def _store(settings: Settings) -> ArtifactStore:
    """Reading needs no certificate: records say how each artifact was written (and are signed)."""
    return ArtifactStore(backend_for_reading(settings))


# ------------------------------------------------------------------------------------------- list
def _set_rows(store: ArtifactStore, stamp: str) -> list[dict]:
    rows = []
    for set_id, found in scan_sets(store.backend, stamp).items():
        backup_set = read_set(store, stamp, set_id)
        plan = read_plan(store.backend, stamp, set_id) if PLAN in found.names else None
        marker = read_marker(store.backend, stamp, set_id) if COMPLETE in found.names else None
        when = set_time(set_id, plan, marker, found.objects)
        skips = read_skips(store.backend, stamp, set_id) if any(n.startswith(SKIPPED) for n in found.names) else {}
        rows.append({"stamp": stamp, "backup_set_id": set_id, "complete": COMPLETE in found.names,
                     "requested_at": when.isoformat() if when else None,
                     "planned": list(plan.components) if plan else None,
                     "components": sorted(backup_set.components), "artifacts": len(backup_set.artifacts),
                     "stored_bytes": backup_set.size,
                     "plaintext_bytes": sum(a.plaintext_size for a in backup_set.artifacts),
                     "skipped": sorted(skips),
                     "waiting": [] if marker is not None or COMPLETE in found.names
                     else waiting_for(plan, backup_set, skips)})
    return sorted(rows, key=lambda r: (r["requested_at"] or "", r["backup_set_id"]))


def list_cmd(args: argparse.Namespace, settings: Settings) -> int:
    store, stamp = _store(settings), args.stamp or settings.stamp
    if args.set_id:
        return _list_one(store, stamp, args.set_id, args.json)
    rows = _set_rows(store, stamp)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no backup sets for stamp {stamp} in {store.backend.name}")
        return 0
    print(f"{'backup set':27} {'status':10} {'requested (UTC)':19}  {'components':28} {'artifacts':>9} {'stored':>10}")
    for r in rows:
        when = (r["requested_at"] or "?")[:19].replace("T", " ")
        print(f"{r['backup_set_id']:27} {'complete' if r['complete'] else 'incomplete':10} {when:19}  "
              f"{','.join(r['components']) or '-':28} {r['artifacts']:>9} {r['stored_bytes'] / MiB:>6.1f} MiB")
        if r["waiting"]:
            print(f"{'':27} waiting: {'; '.join(r['waiting'])}")
    return 0


def _list_one(store: ArtifactStore, stamp: str, set_id: str, as_json: bool) -> int:
    backup_set, skips = read_set(store, stamp, set_id), read_skips(store.backend, stamp, set_id)
    if not backup_set.artifacts and not skips:
        raise ObjectNotFound(f"no artifacts in backup set {stamp}/{set_id} on {store.backend.name}",
                             hint="`appsvc-dr artifacts list --stamp STAMP` shows the sets that exist.")
    complete = store.backend.exists(f"{stamp}/{set_id}/{COMPLETE}")
    waiting = [] if complete else waiting_for(read_plan(store.backend, stamp, set_id), backup_set, skips)
    if as_json:
        print(json.dumps({"stamp": stamp, "backup_set_id": set_id, "complete": complete, "waiting": waiting,
                          "artifacts": [{k: v for k, v in asdict(a).items() if k != "deduplicated"}
                                        for a in backup_set.artifacts]}, indent=2))
        return 0
    print(f"{stamp}/{set_id}: {'complete' if complete else 'incomplete'}, {len(backup_set.artifacts)} artifact(s)"
          + (f"; waiting: {'; '.join(waiting)}" if waiting else ""))
    print(f"{'artifact':44} {'size':>12} {'stored':>12}  {'sha256':12}  encrypted")
    for a in backup_set.artifacts:
        name = a.key.split("/", 2)[2]
        enc = f"yes ({a.thumbprint})" if a.encrypted else "no"
        print(f"{name:44} {a.plaintext_size:>12} {a.stored_size:>12}  {(a.plaintext_sha256 or '-')[:12]:12}  {enc}")
        if a.metadata:
            print(f"    {describe_backup(a.metadata)}")
    return 0


def describe_backup(meta: dict) -> str:
    """One line from a database backup's record metadata: engine, version, server, kind, LSNs, times, stripe."""
    kind = str(meta.get("backup_type", "backup")) + (", copy-only" if meta.get("copy_only") else "")
    parts = [" ".join(str(meta[k]) for k in ("engine", "server_version") if meta.get(k)) or "?",
             f"on {meta['server']}" if meta.get("server") else "", kind]
    if meta.get("first_lsn") or meta.get("last_lsn"):
        parts.append(f"LSN {meta.get('first_lsn', '?')}..{meta.get('last_lsn', '?')}"
                     + (f" (base {meta['database_backup_lsn']})" if meta.get("database_backup_lsn") else ""))
    if meta.get("started_at") or meta.get("finished_at"):
        parts.append(f"{str(meta.get('started_at', '?'))[:19]} → {str(meta.get('finished_at', '?'))[:19]} UTC")
    if int(meta.get("stripes") or 1) > 1:
        parts.append(f"stripe {meta.get('stripe', '?')} of {meta['stripes']}")
    return " · ".join(p for p in parts if p)


# -------------------------------------------------------------------------------------------- get
def get_cmd(args: argparse.Namespace, settings: Settings) -> int:
    store, keys = _store(settings), keyring_from_args(args)
    out: Path = args.out / args.artifact_key.rsplit("/", 1)[-1] if args.out.is_dir() else args.out
    record = store.record(args.artifact_key)
    progress = ProgressBar(args.artifact_key.rsplit("/", 1)[-1], record.stored_size if record else 0)
    try:
        got = write_atomically(out, lambda fh: store.get(args.artifact_key, fh, keys=keys, progress=progress))
    finally:
        progress.close()
    sha = got.plaintext_sha256 or "not recorded (a pack: each blob in it is checked by its own)"
    print(f"wrote {out}: {got.plaintext_size} bytes, sha256 {sha} (verified"
          f"{', decrypted' if got.encrypted else ''})")
    return 0


# ----------------------------------------------------------------------------------------- verify
def verify_cmd(args: argparse.Namespace, settings: Settings) -> int:
    store, keys, stamp = _store(settings), keyring_from_args(args), args.stamp or settings.stamp
    set_ids = [args.set_id] if args.set_id else list(scan_sets(store.backend, stamp))
    checked = failed = 0
    for set_id in set_ids:
        backup_set = read_set(store, stamp, set_id)
        if args.set_id and not backup_set.artifacts:
            raise ObjectNotFound(f"no artifacts in backup set {stamp}/{set_id} on {store.backend.name}")
        for artifact in backup_set.artifacts:
            checked += 1
            try:
                store.check(artifact.key, keys=keys)
                print(f"ok      {artifact.key}")
            except DrError as exc:
                failed += 1
                print(f"FAILED  {artifact.key}: {exc.message}")
    how = "decrypted and hashed" if keys else "stored bytes hashed (pass --key/--pfx to decrypt too)"
    print(f"{checked - failed} ok, {failed} failed ({how})")
    return 1 if failed else 0


# -------------------------------------------------------------------------------------- retention
def retention_cmd(args: argparse.Namespace, settings: Settings) -> int:
    r = settings.retention
    if chosen_store() not in (None, "primary"):     # a mirror target: its own policy where it sets one
        target = settings.mirror.target(chosen_store())  # type: ignore[arg-type]
        r = r.model_copy(update={k: v for k, v in (("keep_last", target.keep_last),
                                                   ("keep_within", target.keep_within)) if v is not None})
    keep_last = r.keep_last if args.keep_last is None else args.keep_last
    if keep_last < 0:
        raise ConfigurationError("--keep-last must be 0 or more")
    keep_within = args.keep_within if args.keep_within is not None else r.keep_within
    stamp = args.stamp or settings.stamp
    backend = writing_backend(settings)
    plan = apply_retention(backend, stamp, keep_last=keep_last, keep_within=keep_within,
                           dry_run=args.dry_run, incomplete_grace=r.grace)
    print(f"retention for {stamp}: keep the newest {keep_last} complete set(s)"
          f"{f' and every set younger than {format_duration(keep_within)}' if keep_within else ''}")
    for line in plan.describe():
        print(line)
    gone = len(plan.delete)
    locked = f"; {len(plan.locked)} locked (S3 Object Lock), deletable later" if plan.locked else ""
    if args.dry_run:
        print(f"dry run: would delete {gone} set(s), keep {len(plan.keep)}{locked}; nothing was deleted")
    else:
        print(f"deleted {gone} set(s) ({plan.deleted_objects} objects), kept {len(plan.keep)}{locked}")
    snapshots = forget(Repository(ArtifactStore(backend), stamp), Policy(keep_last=keep_last, keep_within=keep_within),
                       dry_run=args.dry_run)
    if snapshots.keep or snapshots.forget:          # the same policy for file-share snapshots (see README)
        print_forget(snapshots)
    packs = prune_functions(ArtifactStore(backend), stamp, grace=r.grace, dry_run=args.dry_run,
                            deleted=plan.delete)   # the Function Apps copies' packs no remaining set needs
    for line in describe_functions(packs):
        print(line)
    return 2 if packs.problems else 0
