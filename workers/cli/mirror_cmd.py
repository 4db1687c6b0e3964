"""`mirror verify [--target T] [--repair]`: compare each mirror target with the primary; copy what is missing."""
from __future__ import annotations

import argparse

from workers.cli.stores import opened
from workers.config import Settings
from workers.mirror.handler import policy_for, target_store
from workers.mirror.sync import compare, sync
from workers.storage.base import StorageMisconfigured, StoragePermissionDenied, StorageUnavailable
from workers.storage.factory import build_store

SHOWN = 20


def register(sub) -> None:
    p = sub.add_parser("mirror", help="mirror targets: compare with the primary and repair")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("verify", help="compare each mirror target with the primary (what it should hold per "
                           "its retention policy); --repair copies what is missing or differs")
    a.add_argument("--stamp", help="stamp (default: APPSVC_DR_STAMP)")
    a.add_argument("--target", help="one mirror target by name (default: every target)")
    a.add_argument("--read-data", action="store_true", help="also hash every recorded artifact on the target "
                   "against its record (reads everything; default: compare listings and sizes)")
    a.add_argument("--repair", action="store_true", help="copy what is missing or differs, verified")
    a.set_defaults(func=verify_cmd)


def verify_cmd(args: argparse.Namespace, settings: Settings) -> int:
    stamp = args.stamp or settings.stamp
    targets = [settings.mirror.target(args.target)] if args.target else settings.mirror.targets
    if not targets:
        print("no mirror targets are configured (APPSVC_DR_MIRROR__TARGETS)")
        return 1
    primary = opened(build_store(settings.store))
    differs = 0
    for target in targets:
        backend, policy = opened(target_store(target)), policy_for(target, settings.retention)
        where = f"{target.name} ({backend.name})"
        try:
            diff = compare(primary, backend, stamp, policy, read_data=args.read_data)
        except (StorageUnavailable, StorageMisconfigured, StoragePermissionDenied) as exc:
            print(f"{where}: cannot be compared: {exc.message}\nhow to fix: {exc.hint} (the target's settings are "
                  f"its entry in APPSVC_DR_MIRROR__TARGETS)")
            differs += 1
            continue
        if not diff.missing:
            print(f"{where}: identical: {len(diff.wanted)} object(s) of {stamp} on both")
            continue
        print(f"{where}: {len(diff.missing) - len(diff.differs)} missing, {len(diff.differs)} differ, of "
              f"{len(diff.wanted)} object(s)")
        for info in diff.missing[:SHOWN]:
            print(f"  {'differs' if info.key in diff.differs else 'missing'}  {info.key}")
        if len(diff.missing) > SHOWN:
            print(f"  … and {len(diff.missing) - SHOWN} more")
        if not args.repair:
            differs += 1
            continue
        result = sync(primary, backend, stamp, policy, read_data=args.read_data)
        for key in result.corrupt:
            print(f"  NOT copied  {key}: fails verification on the primary (restore it from the target)")
        print(f"{where}: repaired: {result.copied} object(s) copied ({result.bytes_copied} bytes), "
              f"{len(result.backlog)} still missing")
        differs += bool(result.backlog)
    return 1 if differs else 0
