"""`restore <what>`: bring a component of a stamp back from the store."""
from __future__ import annotations


def register(sub) -> None:
    from workers.cli import database_cmd, fileshare_cmd, functions_cmd, secrets_cmd

    p = sub.add_parser("restore", help="restore secrets (and, as they land, databases and the file share)")
    restore_sub = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    secrets_cmd.register_restore(restore_sub)
    database_cmd.register_restore(restore_sub)
    fileshare_cmd.register_restore(restore_sub)
    functions_cmd.register_restore(restore_sub)
