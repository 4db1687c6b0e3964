"""`restore fileshare`, `snapshots list` and `snapshots diff`: the file share back, like robocopy /E."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import threading
import time
from pathlib import Path

from workers.cli import snapshots_cmd
from workers.cli.keyopts import add_key_options, keyring_from_args
from workers.cli.progress import ProgressBar
from workers.cli.stores import artifact_store
from workers.config import Settings
from workers.fileshare.opener import open_tree
from workers.fileshare.restore import Restorer, select
from workers.fileshare.restorereport import REACL, Failure
from workers.fileshare.tree import SourceDenied, SourceMisconfigured
from workers.repository.manifest import diff
from workers.repository.paths import printable
from workers.repository.repo import Repository
from workers.repository.snapshots import load_manifest, snapshot_of_set
from workers.runtime.errors import ConfigurationError

MiB = 1024 * 1024


def register(sub) -> None:
    p = sub.add_parser("snapshots", help="file-share snapshots: list, diff, forget, prune, unlock")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("list", help="every file-share snapshot of a stamp")
    a.add_argument("--stamp", help="stamp (default: APPSVC_DR_STAMP)")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.set_defaults(func=list_cmd)
    a = actions.add_parser("diff", help="what changed between two snapshots (+ added, - removed, M content, "
                           "T mtime/attributes)")
    a.add_argument("old", metavar="A")
    a.add_argument("new", metavar="B")
    a.add_argument("--stamp", help="stamp (default: APPSVC_DR_STAMP)")
    add_key_options(a)
    a.set_defaults(func=diff_cmd)
    snapshots_cmd.register(actions)


def register_restore(restore_sub) -> None:
    p = restore_sub.add_parser("fileshare", help="restore a file-share snapshot into a directory or SMB share "
                               "(robocopy /E), then print the ReACL step")
    p.add_argument("--stamp", help="stamp (default: APPSVC_DR_STAMP)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--snapshot", help="snapshot id (see `appsvc-dr snapshots list`)")
    which.add_argument("--set", dest="set_id", help="the snapshot of this backup set")
    p.add_argument("--target", required=True, help=r"\\server\share[\dir] or a local directory")
    p.add_argument("--path", help="restore only this directory or file of the snapshot (e.g. site/wwwroot)")
    p.add_argument("--transfers", type=int, help="files written at once (default: APPSVC_DR_FILESHARE__TRANSFERS)")
    p.add_argument("--dry-run", action="store_true", help="print the restore plan (what would be created, "
                   "replaced, and every conflict with the target) and write nothing")
    p.add_argument("--overwrite", action="store_true", help="resolve conflicts by replacing: read-only files are "
                   "replaced, a directory where a file goes is moved aside, a file where a directory goes removed")
    p.add_argument("--no-attributes", dest="attributes", action="store_false", help="do not restore DOS "
                   "attributes (read-only, hidden, system, archive)")
    p.add_argument("--target-username", help="SMB user for the target (default: APPSVC_DR_FILESHARE__USERNAME)")
    p.add_argument("--target-password-env", metavar="VAR", help="environment variable holding its password "
                   "(default: APPSVC_DR_FILESHARE__PASSWORD)")
    p.add_argument("--target-port", type=int, help="SMB port of the target (default: APPSVC_DR_FILESHARE__PORT)")
    add_key_options(p)
    p.set_defaults(func=restore_cmd)


def _repo(settings: Settings, args: argparse.Namespace) -> Repository:
    return Repository(artifact_store(settings), args.stamp or settings.stamp,
                      cache_dir=settings.fileshare.cache_dir)


def list_cmd(args: argparse.Namespace, settings: Settings) -> int:
    repo = _repo(settings, args)
    found = list(repo.summaries())
    if args.json:
        print(json.dumps(found, indent=2, sort_keys=True))
        return 0
    if not found:
        print(f"no file-share snapshots for stamp {repo.stamp}")
        return 0
    print(f"{'snapshot':36} {'created (UTC)':20} {'files':>8} {'MiB':>9} {'new MiB':>9}  state    source")
    for s in found:
        state = "partial" if s["partial"] else "complete"
        where = s["source"] + (f" ({s['sub_path']})" if s.get("sub_path") else "")
        print(f"{s['snapshot_id']:36} {s['created_at'][:19].replace('T', ' '):20} {s['files']:>8} "
              f"{s['bytes'] / MiB:>9.1f} {s['new_bytes'] / MiB:>9.1f}  {state:8} {where}")
    return 0


def diff_cmd(args: argparse.Namespace, settings: Settings) -> int:
    repo = _repo(settings, args)
    keys = keyring_from_args(args, required=False)
    old, new = (repo.manifest(s, keys) for s in (args.old, args.new))
    changes = diff(old.entries, new.entries)
    for line in changes.lines():
        print(line)
    print(f"{len(changes.added)} added, {len(changes.removed)} removed, {len(changes.modified)} modified, "
          f"{len(changes.touched)} with new mtime/attributes")
    return 0


def restore_cmd(args: argparse.Namespace, settings: Settings) -> int:
    s = settings.fileshare
    repo = _repo(settings, args)
    keys = keyring_from_args(args, required=False)
    snapshot = args.snapshot or snapshot_of_set(repo, args.set_id)
    manifest = load_manifest(repo, snapshot, keys)
    password = s.password
    if args.target_password_env:
        if args.target_password_env not in os.environ:
            raise ConfigurationError(f"environment variable {args.target_password_env} is not set")
        password = os.environ[args.target_password_env]
    target = open_tree(args.target, username=args.target_username or s.username, password=password,
                       port=args.target_port or s.port, encrypt=s.encrypt, create=not args.dry_run)
    chosen = select(manifest, args.path)
    bar, lock = ProgressBar("restore", sum(e.size for e in chosen if not e.is_dir)), threading.Lock()

    def progress(nbytes: int) -> None:
        with lock:
            bar(nbytes)

    restorer = Restorer(repo, target, keys=keys, transfers=args.transfers or s.transfers, progress=progress,
                        overwrite=args.overwrite, attributes=args.attributes, retries=s.retries, wait=s.wait,
                        temp_root=Path(s.cache_dir).expanduser() / "restore-tmp")
    started = time.monotonic()
    try:
        with _target_hints(args.target):
            if args.dry_run:
                return _print_plan(restorer.plan(manifest, args.path), snapshot, args)
            report = restorer.run(manifest, args.path)
    finally:
        bar.close()
        target.close()
    took = time.monotonic() - started
    print(f"restored snapshot {snapshot} ({manifest.source}{', partial' if manifest.partial else ''}) to "
          f"{args.target}{f' (only {args.path})' if args.path else ''}:")
    print(f"  {report.dirs} directories, {report.files_restored} files written ({report.bytes_written / MiB:.1f} "
          f"MiB, every SHA-256 verified), {report.files_identical} already identical, in {took:.1f}s")
    _listed("conflicts resolved", report.resolved)
    _listed("restored under another name", report.renamed)
    _listed("NOT restored", report.failed)
    if manifest.partial:
        print(f"  note: the snapshot skipped {len(manifest.skipped)} file(s) that were in use when it was taken:")
        for item in manifest.skipped[:20]:                  # names from the store: escaped if not printable
            print(f"    {printable(item['path'])}: {printable(item['reason'])}")
    if not report.exact:
        print(f"\nThe target differs from the snapshot ({len(report.failed)} not restored, {len(report.renamed)} "
              "renamed): fix what is listed and run the same restore again (what is done is skipped).")
        return 1
    print(f"\nNext: {REACL}")
    return 0


def _listed(title: str, items: list, limit: int = 50) -> None:
    if not items:
        return
    print(f"  {title} ({len(items)}):")
    for item in items[:limit]:
        print(f"    {printable(item.path)}: {printable(item.reason)}" + (f" — {item.hint}" if item.hint else ""))
    if len(items) > limit:
        print(f"    ... and {len(items) - limit} more")


def _print_plan(plan, snapshot: str, args: argparse.Namespace) -> int:
    where = args.target if plan.target_exists else f"{args.target} (does not exist yet: created)"
    print(f"dry run: restoring snapshot {snapshot} to {where} would mean:\n  {plan.summary()}")
    _listed("conflicts", [Failure(s.entry.path, s.reason, s.hint) for s in plan.conflicts()])
    print("nothing was written.")
    return 1 if any(s.action == "unresolved" or s.resolve == "rename" for s in plan.steps) else 0


@contextlib.contextmanager
def _target_hints(target: str):
    """Errors about the target tree name --target (the tree's own hints name the backup source's settings)."""
    try:
        yield
    except SourceDenied as exc:
        raise SourceDenied(exc.message, hint="The file server rejected the login for the target: check "
                           "--target-username / --target-password-env (default APPSVC_DR_FILESHARE__USERNAME / "
                           "APPSVC_DR_FILESHARE__PASSWORD).") from exc
    except SourceMisconfigured as exc:
        raise SourceMisconfigured(exc.message, hint=f"Check --target {target!r}: \\\\server\\share[\\dir] on "
                                  "a share that exists, or an absolute local directory.") from exc
