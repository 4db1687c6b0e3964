"""Private-key options shared by every command that decrypts: --key PEM, --pfx FILE, passwords from env
variables (or asked for on a terminal) — never as command-line values; and --store, the copy it reads."""
from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Callable

from workers.cli.stores import add_store_option
from workers.runtime.errors import ConfigurationError
from workers.storage.codec import KeyRing
from workers.storage.keys import WrongPasswordError


def add_key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", action="append", default=[], metavar="PEM",
                        help="private key (PEM) of an encryption certificate; repeat for older certificates")
    parser.add_argument("--key-password-env", metavar="VAR", help="environment variable holding the PEM password")
    parser.add_argument("--pfx", action="append", default=[], metavar="FILE", help="PFX/PKCS#12 with the key "
                        "(repeatable)")
    parser.add_argument("--pfx-password-env", metavar="VAR", help="environment variable holding the PFX password")
    parser.add_argument("--allow-unsigned", action="store_true", help="read legacy artifacts written before "
                        "signing was enabled (each unsigned object is logged as a WARNING)")
    add_store_option(parser)                      # every command that decrypts reads the store: from which copy


def env_password(var: str | None) -> str | None:
    if var is None:
        return None
    value = os.environ.get(var)
    if value is None:
        raise ConfigurationError(f"environment variable {var} is not set", hint=f"export {var}=... (the "
                                 "password), or leave out the option to be asked interactively.")
    return value


def _with_password(load: Callable[[str | None], object], password: str | None, label: str) -> None:
    try:
        load(password)
    except WrongPasswordError:
        if password is not None or not sys.stdin.isatty():
            raise
        load(getpass.getpass(f"password for {label}: "))


def keyring_from_args(args: argparse.Namespace, *, required: bool = False) -> KeyRing | None:
    if not args.key and not args.pfx:
        if required:
            raise ConfigurationError("no private key given", hint="Pass --key private.pem or --pfx cert.pfx "
                                     "(with --pfx-password-env VAR).")
        return None
    ring = KeyRing()
    key_password, pfx_password = env_password(args.key_password_env), env_password(args.pfx_password_env)
    for path in map(Path, args.key):
        _with_password(lambda pw, p=path: ring.add_pem(p, password=pw), key_password, f"key file {path}")
    for path in map(Path, args.pfx):
        _with_password(lambda pw, p=path: ring.add_pfx(p, password=pw), pfx_password, f"PFX file {path}")
    return ring
