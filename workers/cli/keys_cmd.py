"""`keys create` (the encryption certificate and its private key) and `keys create-signing` (the workers'
Ed25519 signing key and the readers' public verify key). Private keys are written 0600 and never
overwritten without --force; passwords never travel on the command line."""
from __future__ import annotations

import argparse
import getpass
import os
from pathlib import Path

from workers.cli.keyopts import env_password
from workers.config import Settings
from workers.runtime.errors import ConfigurationError, PermanentError
from workers.storage.codec import generate_self_signed, load_certificate, thumbprint
from workers.storage.signing import generate_signing_key


def register(sub) -> None:
    p = sub.add_parser("keys", help="encryption certificates, signing keys")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("create", help="a new self-signed certificate (for the workers) and its private "
                           "key (keep it offline, for restores)")
    a.add_argument("--cn", required=True, help="certificate common name, e.g. appservice-dr-stamp1")
    a.add_argument("--cert-out", required=True, type=Path, help="certificate PEM to write")
    a.add_argument("--key-out", required=True, type=Path, help="private key PEM to write (mode 0600)")
    a.add_argument("--days", type=int, default=730, help="validity in days (default 730)")
    a.add_argument("--key-size", type=int, choices=[2048, 3072, 4096], default=3072)
    a.add_argument("--key-password-env", metavar="VAR", help="encrypt the key with the password in env VAR")
    a.add_argument("--encrypt-key", action="store_true", help="encrypt the key, asking for a password")
    a.add_argument("--force", action="store_true", help="overwrite existing files")
    a.set_defaults(func=keys_create_cmd)
    a = actions.add_parser("create-signing", help="a new Ed25519 signing key (for the workers) and its public "
                           "verify key (for every reader: restores, drill, retention)")
    a.add_argument("--key-out", required=True, type=Path, help="private signing key PEM to write (mode 0600)")
    a.add_argument("--pub-out", required=True, type=Path, help="public verify key PEM to write")
    a.add_argument("--force", action="store_true", help="overwrite existing files")
    a.set_defaults(func=keys_create_signing_cmd)


def _write_new(path: Path, data: bytes, mode: int, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, mode)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), mode)
        fh.write(data)


def _refuse_existing(paths: tuple[Path, ...], force: bool, why: str) -> None:
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise ConfigurationError(f"{existing[0]} already exists; refusing to overwrite it",
                                 hint=f"{why}: choose other paths, or pass --force if you are sure.")


def _write_pair(private: tuple[Path, bytes], public: tuple[Path, bytes], force: bool, done: str) -> int:
    """The private file (0600) and the public one (0644), then ``done`` for the operator."""
    try:
        _write_new(*private, 0o600, force)
        _write_new(*public, 0o644, force)
    except OSError as exc:
        raise PermanentError(f"cannot write {exc.filename}: {exc.strerror}",
                             hint="Choose writable output paths.") from None
    print(done)
    return 0


def keys_create_cmd(args: argparse.Namespace, settings: Settings) -> int:
    if args.days < 1:
        raise ConfigurationError("--days must be 1 or more")
    _refuse_existing((args.cert_out, args.key_out), args.force, "Losing a private key makes every backup "
                     "encrypted for it unreadable")
    password = env_password(args.key_password_env)
    if password is None and args.encrypt_key:
        password = getpass.getpass("password for the new key: ")
        if password != getpass.getpass("again: "):
            raise ConfigurationError("the passwords differ")
    cert_pem, key_pem = generate_self_signed(args.cn, args.days, key_size=args.key_size, password=password)
    return _write_pair((args.key_out, key_pem), (args.cert_out, cert_pem), args.force,
                       f"certificate {args.cert_out} (thumbprint {thumbprint(load_certificate(cert_pem))}, valid "
                       f"{args.days} days)\nprivate key {args.key_out} (mode 0600"
                       f"{', encrypted' if password else ''})\nGive the workers the certificate "
                       f"(APPSVC_DR_ENCRYPTION__CERTIFICATE={args.cert_out}); keep the private key offline: "
                       "restores need it.")


def keys_create_signing_cmd(args: argparse.Namespace, settings: Settings) -> int:
    _refuse_existing((args.key_out, args.pub_out), args.force, "Readers keep needing the old verify key for "
                     "what it signed")
    private, public, kid = generate_signing_key()
    return _write_pair((args.key_out, private), (args.pub_out, public), args.force,
                       f"signing key {args.key_out} (mode 0600, key id {kid[:16]})\nverify key {args.pub_out}\n"
                       f"Give the workers the signing key (APPSVC_DR_ENCRYPTION__SIGNING_KEY={args.key_out}) and "
                       f"every reader the verify key (APPSVC_DR_ENCRYPTION__VERIFY_KEYS={args.pub_out}; after a "
                       "rotation list the old one too).")
