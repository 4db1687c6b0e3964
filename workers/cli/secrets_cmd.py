"""`secrets list` and `restore secrets`: get SystemSecrets.json back for Restore-AppServiceStamp."""
from __future__ import annotations

import argparse
from pathlib import Path

from workers.cli.keyopts import add_key_options, keyring_from_args
from workers.cli.output import write_atomically
from workers.cli.run_cmd import private_umask
from workers.cli.stores import artifact_store
from workers.config import Settings
from workers.recover.model import CONTROLLER_SECRETS
from workers.runtime.errors import PermanentError
from workers.secrets.versions import secrets_key, set_reference, versions


def register(sub) -> None:
    p = sub.add_parser("secrets", help="stored SystemSecrets.json versions")
    p.add_argument("action", choices=["list"])
    p.add_argument("--stamp", help="stamp (default: APPSVC_DR_STAMP)")
    p.set_defaults(func=list_versions)


def register_restore(restore_sub) -> None:
    p = restore_sub.add_parser("secrets", help="decrypt SystemSecrets.json and print the controller steps")
    p.add_argument("--stamp", help="stamp (default: APPSVC_DR_STAMP)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--version", help="version id (see `appsvc-dr secrets list`)")
    which.add_argument("--set", help="the secrets version a backup set was made with")
    which.add_argument("--latest", action="store_true", help="the newest version (default)")
    p.add_argument("--out", type=Path, required=True, help="where to write SystemSecrets.json (mode 0600)")
    p.add_argument("--controller-path", default=CONTROLLER_SECRETS, help="where the file is copied on the "
                   rf"controller CN0-VM (default {CONTROLLER_SECRETS})")
    p.add_argument("--override-database-server", help="passed to Restore-AppServiceStamp")
    p.add_argument("--override-content-share", help="passed to Restore-AppServiceStamp")
    add_key_options(p)
    p.set_defaults(func=restore_secrets)


def list_versions(args: argparse.Namespace, settings: Settings) -> int:
    stamp = args.stamp or settings.stamp
    found = versions(artifact_store(settings), stamp)
    if not found:
        print(f"no secrets stored for stamp {stamp}")
        return 0
    print(f"{'version':32} {'fingerprint':14} {'rotated at (UTC)':22} stored at")
    for v in found:
        print(f"{v.version_id:32} {v.fingerprint[:12]:14} {v.rotated_at:%Y-%m-%d %H:%M:%S}    {v.artifact.stored_at}")
    return 0


def controller_steps(controller_path: str, db_server: str | None, content_share: str | None) -> list[str]:
    """The controller's part of the recovery document, for CN0-VM (a Windows path; `recover run` writes them as
    a script, Restore-AppServiceController.ps1)."""
    restore = f'Restore-AppServiceStamp -FilePath "{controller_path}"'
    if db_server:
        restore += f' -OverrideDatabaseServer "{db_server}"'
    if content_share:
        restore += f' -OverrideContentShare "{content_share}"'
    return ["net stop WebFarmService", "net stop ResourceMetering", restore, "Restore-AppServiceRoles",
            "net start WebFarmService", "net start ResourceMetering",
            "Get-AppServiceServer    # repeat until a management server is Ready",
            "Get-AppServiceSite | Sync-AppServiceObject", "Get-AppServiceServerFarm | Sync-AppServiceObject"]


def restore_secrets(args: argparse.Namespace, settings: Settings) -> int:
    private_umask()                     # SystemSecrets.json is written in plaintext
    stamp = args.stamp or settings.stamp
    keys = keyring_from_args(args, required=True)
    store = artifact_store(settings)
    key = secrets_key(store, stamp, keys, version=args.version, set_id=args.set)
    wanted = set_reference(store, stamp, args.set, keys)["fingerprint"] if args.set and not args.version else None
    record = store.record(key)
    if wanted is not None and (record is None or record.plaintext_sha256 != wanted):
        raise PermanentError(f"set {args.set} names secrets fingerprint {wanted[:12]}, {key} holds "
                             f"{record.plaintext_sha256[:12] if record else 'nothing'}",
                             hint="The set's secrets reference or the version was altered: restore the secrets of "
                                  "another set (`appsvc-dr secrets list`).")
    write_atomically(args.out, lambda stream: store.get(key, stream, keys=keys))
    print(f"restored {key} → {args.out.resolve()} (fingerprint {record.plaintext_sha256[:12]}, mode 0600)")
    print(f"\nCopy it to the controller CN0-VM as {args.controller_path}; there, as roleadmin, in an elevated "
          "PowerShell session, run (HostingVssService too before App Service 1.5; `appsvc-dr recover run` writes "
          "all of this as Restore-AppServiceController.ps1):\n")
    for line in controller_steps(args.controller_path, args.override_database_server, args.override_content_share):
        print(f"    {line}")
    print("\nThen delete the decrypted SystemSecrets.json, here and on CN0-VM.")
    return 0
