"""`appsvc-dr`: thin command line — parse, build, call."""
from __future__ import annotations

import argparse
import logging
import sys

from workers.config import Settings, load_settings
from workers.runtime.errors import DrError
from workers.runtime.logs import configure

QUIET = ("smbprotocol", "smbclient", "spnego", "urllib3", "minio", "botocore", "pika", "pyodbc", "azure")


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(getattr(args, "config", None))
    verbose = getattr(args, "verbose", False)
    configure(settings.log.format, "DEBUG" if verbose else settings.log.level)
    for name in QUIET:                             # a library's INFO chatter (80,000 lines for a restore)
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
    return settings


def build_parser() -> argparse.ArgumentParser:
    from workers.cli import artifacts_cmd, config_cmd, demo_cmd, dlq_cmd, drill_cmd, fileshare_cmd, keys_cmd, \
        mirror_cmd, publish_cmd, recover_cmd, restore_cmd, run_cmd, schedule_cmd, secrets_cmd, status_cmd

    parser = argparse.ArgumentParser(prog="appsvc-dr", description="Backup and disaster recovery for App "
                                     "Service on Azure Stack Hub.")
    parser.add_argument("--config", help="TOML configuration file (env APPSVC_DR_CONFIG_FILE)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, libraries' INFO lines included")
    from workers.cli.stores import add_store_option
    add_store_option(parser)                    # --store primary|NAME: which copy of the store commands use
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (publish_cmd, run_cmd, dlq_cmd, config_cmd, secrets_cmd, restore_cmd, artifacts_cmd, keys_cmd,
                   demo_cmd, schedule_cmd, fileshare_cmd, drill_cmd, recover_cmd, status_cmd, mirror_cmd):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
        if getattr(args, "allow_unsigned", False):          # --allow-unsigned (key options): legacy reads
            settings.encryption.allow_unsigned = True
        from workers.cli.stores import closing_stores
        with closing_stores():                               # every store the command opened is closed after it
            return int(args.func(args, settings) or 0)
    except DrError as exc:
        print(f"error: {exc.message}\nhow to fix: {exc.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
