"""`snapshots forget|prune|unlock`: file-share retention. Forget drops snapshots beyond the policy (no key
needed); prune frees what no remaining snapshot needs (reads the manifests: the private key of encrypted
repositories), under the repository's exclusive lock."""
from __future__ import annotations

import argparse
import functools

from workers.cli.keyopts import add_key_options, keyring_from_args
from workers.cli.stores import artifact_store
from workers.config import Settings
from workers.repository.forget import ForgetPlan, Policy, forget
from workers.repository.lock import STALE_AFTER, RepoLock, read_locks, unlock
from workers.repository.prune import Pruner
from workers.repository.repo import Repository
from workers.runtime.parsing import parse_duration
from workers.storage.codec import KeyRing


def register(actions) -> None:
    """Add the actions to the `snapshots` sub-parser (made in ``fileshare_cmd``)."""
    a = actions.add_parser("forget", help="forget snapshots beyond a keep policy (default: the retention "
                           "settings); --prune frees their data too")
    _stamp(a)
    a.add_argument("--keep-last", type=_count, help="newest snapshots to keep per source "
                   "(default: APPSVC_DR_RETENTION__KEEP_LAST when no --keep-* is given)")
    a.add_argument("--keep-daily", type=_count, default=0, help="keep the newest snapshot of each of the last N days")
    a.add_argument("--keep-weekly", type=_count, default=0, help="keep the newest snapshot of each of the last N weeks")
    a.add_argument("--keep-within", type=duration_arg, help="also keep snapshots younger than this, e.g. 30d "
                   "(default: APPSVC_DR_RETENTION__KEEP_WITHIN when no --keep-* is given)")
    a.add_argument("--prune", action="store_true", help="then prune (needs --key/--pfx for encrypted snapshots)")
    a.add_argument("--dry-run", action="store_true", help="show what would happen, change nothing")
    _repack(a)
    add_key_options(a)
    a.set_defaults(func=forget_cmd)
    a = actions.add_parser("prune", help="delete packs no remaining snapshot needs and rewrite the index")
    _stamp(a)
    a.add_argument("--dry-run", action="store_true", help="show what would be deleted, change nothing")
    _repack(a)
    add_key_options(a)
    a.set_defaults(func=prune_cmd)
    a = actions.add_parser("unlock", help="remove stale repository locks (left by a process that died)")
    _stamp(a)
    a.add_argument("--all", action="store_true", help="remove every lock, stale or not (only when nothing runs)")
    a.set_defaults(func=unlock_cmd)


DEFAULT_REPACK_BELOW = 50.0


def _repack(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repack-below", type=_percent, metavar="PCT",
                   help="rewrite packs of which less than PCT%% is still needed (their needed blobs go to new packs, "
                        "encrypted with the configured certificate) so they can be deleted; 0 keeps partly used "
                        "packs whole. Default 50, skipped with a note when encrypted packs qualify but no "
                        "certificate is configured (an explicit PCT fails instead)")


def _percent(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1
    if not 0 <= number <= 100:
        raise argparse.ArgumentTypeError(f"expected a percentage from 0 to 100, got {value!r}")
    return number


def _stamp(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stamp", help="stamp (default: APPSVC_DR_STAMP)")


def _count(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a count of 0 or more, got {value!r}")
    return int(value)


def duration_arg(value: str):
    """argparse type for durations such as 30d or 12h (retention apply uses it too)."""
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _repo(settings: Settings, args: argparse.Namespace) -> Repository:
    return Repository(artifact_store(settings), args.stamp or settings.stamp, cache_dir=settings.fileshare.cache_dir)


def policy_from(args: argparse.Namespace, settings: Settings) -> Policy:
    explicit = args.keep_last is not None or args.keep_daily or args.keep_weekly or args.keep_within is not None
    if not explicit:
        return Policy(keep_last=settings.retention.keep_last, keep_within=settings.retention.keep_within)
    return Policy(keep_last=args.keep_last or 0, keep_daily=args.keep_daily, keep_weekly=args.keep_weekly,
                  keep_within=args.keep_within)


def print_forget(plan: ForgetPlan, *, prune_hint: bool = True) -> None:
    print(f"file-share snapshots of {plan.stamp}: {plan.policy.describe()}")
    for line in plan.describe():
        print(f"  {line}")
    if plan.dry_run:
        print(f"dry run: would forget {len(plan.forget)} snapshot(s), keep {len(plan.keep)}; nothing was changed")
        return
    print(f"forgot {len(plan.forget)} snapshot(s) ({plan.deleted_objects} objects), kept {len(plan.keep)}")
    if plan.forget and prune_hint:
        print(f"their data stays in the store until `appsvc-dr snapshots prune --stamp {plan.stamp} --key "
              "private.pem` (the private key reads the remaining manifests)")


def forget_cmd(args: argparse.Namespace, settings: Settings) -> int:
    repo = _repo(settings, args)
    keys = keyring_from_args(args, required=False) if args.prune else None
    plan = forget(repo, policy_from(args, settings), dry_run=args.dry_run)
    print_forget(plan, prune_hint=not args.prune)
    return _prune(repo, keys, args, forgotten=plan.forget, settings=settings) if args.prune else 0


def prune_cmd(args: argparse.Namespace, settings: Settings) -> int:
    return _prune(_repo(settings, args), keyring_from_args(args, required=False), args, settings=settings)


def _prune(repo: Repository, keys: KeyRing | None, args: argparse.Namespace, *, settings: Settings,
           forgotten: list[str] | None = None) -> int:
    dry_run = args.dry_run
    below = DEFAULT_REPACK_BELOW if args.repack_below is None else args.repack_below
    pruner = functools.partial(Pruner, repo, keys, unindexed_grace=STALE_AFTER, repack_below=below / 100,
                               repack_strict=args.repack_below is not None, pack_size=settings.fileshare.pack_size)
    print(f"pruning the file-share repository of {repo.stamp} on {repo.data.backend.name}"
          f"{' (dry run: nothing is changed)' if dry_run else ''}")
    if dry_run:
        report = pruner().run(dry_run=True, forgotten=forgotten or ())
    else:
        with RepoLock(repo.data.backend, repo.stamp, "prune", holder="appsvc-dr snapshots prune",
                      exclusive=True) as lock:
            for stale in lock.removed_stale:
                print(f"  removed a stale lock: {stale.holder} (host {stale.host}, pid {stale.pid})")
            report = pruner().run(before_changes=lock.check)
    for line in report.lines():
        print(f"  {line}")
    return 0


def unlock_cmd(args: argparse.Namespace, settings: Settings) -> int:
    stamp = args.stamp or settings.stamp
    backend = artifact_store(settings).backend
    removed = unlock(backend, stamp, everything=args.all)
    for lock in removed:
        print(f"removed the {lock.kind} lock of {lock.holder} (host {lock.host}, pid {lock.pid})")
    left = read_locks(backend, stamp)
    print(f"removed {len(removed)} lock(s); {len(left)} still held" + (" (not stale: pass --all to remove them "
                                                                       "too)" if left else ""))
    return 0
