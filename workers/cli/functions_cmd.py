"""`restore functions`: a Function Apps storage copy of a backup set into a new storage account."""
from __future__ import annotations

import argparse
import os
import time

from workers.cli.keyopts import add_key_options, keyring_from_args
from workers.cli.stores import artifact_store
from workers.config import Settings
from workers.runtime.errors import ConfigurationError
from workers.runtime.parsing import comma_list

MiB = 1024 * 1024


def register_restore(restore_sub) -> None:
    p = restore_sub.add_parser("functions", help="restore the storage account(s) of Function Apps into a new "
                               "account, then print the manual steps")
    p.add_argument("--stamp", help="stamp (default: APPSVC_DR_STAMP)")
    p.add_argument("--set", dest="set_id", required=True, help="backup set id")
    p.add_argument("--target-connection-string-env", metavar="VAR", required=True,
                   help="environment variable holding the new account's connection string (never a flag: it "
                        "holds the key)")
    p.add_argument("--account", help="which backed-up account (default: the only one configured in "
                   "APPSVC_DR_FUNCTIONS__ACCOUNTS)")
    p.add_argument("--containers", help="comma-separated blob containers to restore (default: all)")
    add_key_options(p)
    p.set_defaults(func=restore_cmd)


def restore_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from workers.functions.client import open_account      # the Azure SDKs: loaded only when restoring
    from workers.functions.restore import MANUAL_STEPS, Restorer

    var = args.target_connection_string_env
    if not os.environ.get(var):
        raise ConfigurationError(f"environment variable {var} is not set",
                                 hint=f"export {var}='DefaultEndpointsProtocol=https;AccountName=...;AccountKey=...'"
                                      " (the new account's connection string)")
    account = args.account
    if account is None:
        names = [a.name for a in settings.functions.accounts]
        if len(names) != 1:
            raise ConfigurationError("which account? --account is needed", hint=f"Configured: {names or 'none'}; "
                                     "pass --account NAME (the name the backup used).")
        account = names[0]
    stamp = args.stamp or settings.stamp
    s = settings.functions
    target = open_account("restore target", os.environ[var], retries=s.retries, timeout=s.timeout,
                          backoff=s.backoff)
    started = time.monotonic()
    try:
        restorer = Restorer(artifact_store(settings), target, keys=keyring_from_args(args, required=False),
                            containers=comma_list(args.containers) if args.containers else None)
        report = restorer.run(stamp, args.set_id, account)
    finally:
        target.close()
    print(f"restored account {account} of set {args.set_id} into the account of ${var} in "
          f"{time.monotonic() - started:.1f}s:")
    print(f"  {report.containers} containers, {report.blobs} blobs ({report.bytes / MiB:.1f} MiB, every SHA-256 "
          f"verified), {report.queues} queues with {report.messages} messages, {report.tables} tables with "
          f"{report.entities} entities")
    if not report.ok:
        print("  counts that DIFFER in the target:")
        for p in report.problems[:50]:
            print(f"    {p}")
        return 1
    print("  counts verified against the target")
    print()
    print(MANUAL_STEPS)
    return 0
