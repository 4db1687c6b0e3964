"""A database the db-backup worker skipped on purpose: recorded in its backup set, told to the operator once.

``database-backed-up`` with ``skipped_reason`` (e.g. "skipped: not the preferred replica" from an Always On
secondary) carries no artifact, so the set can never complete on its own: it cannot restore the stamp without
that database. The catalog therefore

* writes ``<stamp>/<set>/skipped/<database>.json`` once (see :mod:`workers.artifacts.sets`), so
  ``appsvc-dr artifacts list`` and the catalog log say "waiting: <database> skipped (<reason>)";
* emits one ``job-failed`` warning per skipped database and set (worker ``db-backup``, error class
  ``DatabaseSkipped``, ``will_retry`` false) that the notifier delivers, saying what was skipped, why and how
  to fix it. Its event id is derived from stamp, set and database; the note remembers the event that wrote it,
  so only a redelivery of that event re-emits the warning (same id) and a second skip of the same database
  (a redelivered backup job) emits nothing.

A skip for a set that already holds the database (another replica backed it up) or is complete is only logged.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from contracts import DatabaseBackedUp, Envelope, JobFailed, JobFailedPayload
from workers.artifacts.setmanifest import read_set
from workers.artifacts.service import ArtifactStore
from workers.artifacts.sets import has_database, read_marker, read_skip, skip_text, write_skip
from workers.runtime.worker import JobContext

ERROR_CLASS = "DatabaseSkipped"
_SKIP_IDS = uuid.UUID("0d4c2b8e-5d0b-4b8e-9a61-7f3e2c6a9b15")

AG_HINT = ("{database} is in an Always On availability group and db-backup found no replica it may back it up on "
           "from {server}: it connects to the replica the AG's backup preference picks (AUTOMATED_BACKUP_PREFERENCE:"
           " PRIMARY, SECONDARY_ONLY, SECONDARY = Prefer Secondary, NONE = Any Replica; then the highest "
           "BACKUP_PRIORITY among connected replicas, 0 = never), and the reason above says which replicas qualified "
           "and why each was not used. Fix one of: bring the preferred replica back into the AG; let the worker "
           "reach it (its endpoint host must resolve and the login must exist on every replica, or map names with "
           "APPSVC_DR_DATABASE__AG_REPLICA_SERVERS); point APPSVC_DR_DATABASE__SERVER at the AG listener; change "
           "the preference (ALTER AVAILABILITY GROUP ... SET (AUTOMATED_BACKUP_PREFERENCE = SECONDARY)); or set "
           "APPSVC_DR_DATABASE__AG_OVERRIDE=true to back up on the replica connected to. ")
OTHER_HINT = "Fix why db-backup skipped {database} on {server}. "
BACKFILL = ("Backup set {set_id} stays incomplete (it cannot restore the stamp without {database}) until the "
            "database is backed up into it: `appsvc-dr publish database-backup-requested --stamp {stamp} "
            "--set-id {set_id} -p database={database}`.")


def skip_event_id(stamp: str, set_id: str, database: str) -> uuid.UUID:
    """The one event id of the skip warning of a database in a set (a redelivery re-emits the same)."""
    return uuid.uuid5(_SKIP_IDS, f"{stamp}/{set_id}/{database}")


def skip_hint(stamp: str, set_id: str, database: str, server: str, reason: str) -> str:
    first = AG_HINT if "preferred" in reason.lower() else OTHER_HINT
    return (first + BACKFILL).format(stamp=stamp, set_id=set_id, database=database, server=server or "?")[:2000]


def record_skip(store: ArtifactStore, event: DatabaseBackedUp, ctx: JobContext) -> list[Envelope]:
    """Note the skip in the set and return the warning for the operator (empty when already told or moot)."""
    p = event.payload
    stamp, set_id, database, reason = event.stamp, event.correlation_id, p.database, p.skipped_reason or ""
    if read_marker(store.backend, stamp, set_id) is not None or has_database(read_set(store, stamp, set_id), database):
        ctx.logger.info("%s skipped %s for %s/%s (%s), but the set already holds it: nothing to do", event.source,
                        database, stamp, set_id, skip_text(reason))
        return []
    hint = skip_hint(stamp, set_id, database, p.server, reason)
    note = {"stamp": stamp, "backup_set_id": set_id, "database": database, "reason": reason, "server": p.server,
            "engine": p.engine, "source": event.source, "skipped_at": datetime.now(timezone.utc).isoformat(),
            "caused_by": str(event.event_id), "hint": hint}
    if not write_skip(store.backend, stamp, set_id, database, note):
        note = read_skip(store.backend, stamp, set_id, database) or note
    if note.get("caused_by") != str(event.event_id):
        ctx.logger.info("backup set %s/%s: %s skipped again (%s); already recorded and notified", stamp, set_id,
                        database, skip_text(reason))
        return []
    ctx.logger.warning("backup set %s/%s waiting: %s skipped (%s) by %s on %s. How to fix: %s", stamp, set_id,
                       database, skip_text(reason), event.source, p.server, hint)
    worker = event.source.removeprefix("worker:") or "db-backup"
    return [event.follow_up(JobFailed, JobFailedPayload(
        worker=worker, failed_event_id=event.causation_id or event.event_id,
        failed_event_type="database-backup-requested" if event.causation_id else event.type,
        error_class=ERROR_CLASS,
        message=(f"{database} was not backed up for backup set {set_id} on {p.server}: {skip_text(reason)}; "
                 f"the set waits for it and stays incomplete")[:4000],
        attempts=1, will_retry=False, hint=hint, severity="warning"),
        source="worker:catalog", event_id=skip_event_id(stamp, set_id, database))]
