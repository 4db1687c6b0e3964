"""Private-key options shared by every command that decrypts: --key PEM, --pfx FILE, passwords from env."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from workers.runtime.errors import ConfigurationError
from workers.storage.artifact import KeyRing


def add_key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", action="append", default=[], metavar="PEM",
                        help="private key (PEM) of an encryption certificate; repeat for older certificates")
    parser.add_argument("--key-password-env", metavar="VAR", help="environment variable holding the PEM password")
    parser.add_argument("--pfx", action="append", default=[], metavar="FILE", help="PFX/PKCS#12 with the key")
    parser.add_argument("--pfx-password-env", metavar="VAR", help="environment variable holding the PFX password")


def _env(name: str | None) -> str | None:
    if not name:
        return None
    if name not in os.environ:
        raise ConfigurationError(f"environment variable {name} is not set", hint="Export it before running.")
    return os.environ[name]


def keyring_from_args(args: argparse.Namespace, *, required: bool = True) -> KeyRing | None:
    if not args.key and not args.pfx:
        if required:
            raise ConfigurationError("no private key given", hint="Pass --key private.pem or --pfx cert.pfx "
                                     "(with --pfx-password-env VAR).")
        return None
    return KeyRing.from_files(keys=[Path(k) for k in args.key], key_password=_env(args.key_password_env),
                              pfx=[Path(p) for p in args.pfx],
                              pfx_password=_env(args.pfx_password_env))
