"""`publish <event-type>`: build an event from options or a JSON file, validate it, publish with confirms."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from contracts import ContractError, default_registry, new_backup_set_id, utcnow
from workers.config import Settings
from workers.runtime.errors import PermanentError
from workers.runtime.publisher import Publisher


def register(sub) -> None:
    p = sub.add_parser("publish", help="publish an event (validated before sending)")
    p.add_argument("event_type", help=", ".join(default_registry().types()))
    p.add_argument("--version", type=int, default=1, help="schema version (default 1)")
    p.add_argument("--stamp", help="stamp name (default: APPSVC_DR_STAMP)")
    p.add_argument("--set-id", help="backup-set id (default: a new one)")
    p.add_argument("-p", "--payload", action="append", default=[], metavar="FIELD=VALUE",
                   help="payload field; VALUE is parsed as JSON when it is valid JSON (repeatable)")
    p.add_argument("--payload-file", type=Path, help="JSON file with the payload object")
    p.add_argument("--event-file", type=Path, help="JSON file with a whole event (envelope and payload)")
    p.add_argument("--file", type=Path, help="secrets-rotated: the exported SystemSecrets.json; it is copied to "
                   "APPSVC_DR_SECRETS__DROP_PATH and the event names the copy (never the contents)")
    p.add_argument("--dry-run", action="store_true", help="validate and print, do not publish")
    p.set_defaults(func=publish)


def _value(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def build_event(args: argparse.Namespace, settings: Settings):
    registry = default_registry()
    if args.event_file:
        try:
            event = registry.decode(args.event_file.read_bytes())
        except ContractError as exc:
            raise PermanentError(f"{args.event_file}: {exc}", hint="Fix the file to match contracts/schemas.")
        if event.type == "backup-due":
            check_components(list(event.payload.components), settings)  # type: ignore[attr-defined]
        return event
    model = registry.model_for(args.event_type, args.version)
    payload = json.loads(args.payload_file.read_text()) if args.payload_file else {}
    if args.file is not None:
        if args.event_type != "secrets-rotated":
            raise PermanentError("--file is for secrets-rotated only", hint="Use --payload-file for payloads.")
        from workers.secrets.drop import copy_to_drop, rotated_by
        payload.setdefault("rotated_by", rotated_by())
        payload.setdefault("rotated_at", utcnow().isoformat())
        payload["drop_path"] = (str(args.file.resolve()) if args.dry_run
                                else copy_to_drop(args.file, settings.secrets, settings.staging))
    for item in args.payload:
        key, sep, raw = item.partition("=")
        if not sep:
            raise PermanentError(f"--payload {item!r} is not FIELD=VALUE", hint="e.g. -p reason=manual")
        payload[key] = _value(raw)
    if model.event_type == "backup-due":
        payload.setdefault("components", list(settings.components))
        check_components(payload["components"], settings)
    if model.event_type == "database-log-backup-requested" and not args.set_id:
        raise PermanentError("database-log-backup-requested needs --set-id: the backup set whose full backup the "
                             "log extends", hint="Pass the newest complete set (`appsvc-dr artifacts list`); a new "
                             "set has no plan, so the log backup (which truncates the log) could not be stored.")
    set_id = args.set_id or payload.get("backup_set_id") or new_backup_set_id()
    if "backup_set_id" in model.model_fields["payload"].annotation.model_fields:
        payload.setdefault("backup_set_id", set_id)
    data = {"type": model.event_type, "version": model.event_version, "source": "cli",
            "stamp": args.stamp or settings.stamp, "correlation_id": set_id, "payload": payload}
    try:
        return registry.decode(json.dumps(data))
    except ContractError as exc:
        raise PermanentError(f"invalid {args.event_type} event: {exc.detail}",
                             hint=f"See contracts/schemas/{model.event_type}.v{model.event_version}.schema.json")


def check_components(wanted: object, settings: Settings) -> None:
    """A backup set may only ask for what this site backs up: no worker would deliver the rest, and the set
    would wait for it for ever."""
    missing = [c for c in wanted if c not in settings.components] if isinstance(wanted, list) else []
    if missing:
        raise PermanentError(f"this site does not back up {', '.join(map(str, missing))} (APPSVC_DR_COMPONENTS="
                             f"{','.join(settings.components)})",
                             hint="Leave those components out, or add them to APPSVC_DR_COMPONENTS and run their "
                                  "workers.")


def publish(args: argparse.Namespace, settings: Settings) -> int:
    try:
        event = build_event(args, settings)
    except (ContractError, ValidationError) as exc:
        raise PermanentError(str(exc), hint="Known event types: " + ", ".join(default_registry().types()))
    if args.dry_run:
        print(event.model_dump_json(indent=2))
        return 0
    with Publisher(settings.broker, retry_for=30) as publisher:
        publisher.publish(event)
    print(f"published {event.type} {event.event_id} (stamp {event.stamp}, backup set {event.correlation_id})",
          file=sys.stdout)
    return 0
