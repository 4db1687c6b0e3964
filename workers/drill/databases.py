"""The database drill, like dbatools' Test-DbaLastBackup: each database artifact of the set is restored for real
as a scratch database ``drill_<db>_<drill id>`` on the configured server, checked, then dropped.

* Restore with the restore command's own code and pre-flight (the backup must hold the database the set names;
  a missing page checksum is a warning here, since the consistency pass follows). SQL Server: ``RESTORE ...
  WITH MOVE`` to scratch file names in ``--data-path`` / ``DATABASE__RESTORE_DATA_PATH`` (drills only), else
  the instance's default data and log directories (``SERVERPROPERTY('InstanceDefaultDataPath')``).
* Consistency: SQL Server ``DBCC CHECKDB (...) WITH NO_INFOMSGS, ALL_ERRORMSGS``; PostgreSQL amcheck where
  available, else a full read of every table (``engine.check_consistency``).
* Cleanup never hides the restore's error: a failed drop is logged and reported on its own (``cleanup``), and
  a scratch database left RESTORING by a failed restore is dropped directly (SET SINGLE_USER there is 5052).
* ``--verify-only`` restores nothing (VERIFYONLY + FILELISTONLY / pg_restore --list and a full read): the result
  is *verified*, never *passed*.
"""
from __future__ import annotations

import logging
import re

from workers.artifacts import stripes
from workers.artifacts.logchain import is_log
from workers.artifacts.setmanifest import read_set
from workers.dbbackup.handler import artifact_name
from workers.dbbackup.restore import restore_from_set, staged_artifact
from workers.drill.base import Drill, timed
from workers.drill.results import VERIFIED, ComponentResult
from workers.engines.base import RestoreOptions
from workers.engines.factory import build_engine
from workers.runtime.errors import DrError, PermanentError, describe, hint_for

log = logging.getLogger("appsvc_dr.drill")
SUFFIXES = {".dump": "postgres", ".bak": "sqlserver"}


def scratch_name(database: str, drill_id: str) -> str:
    """``drill_<db>_<drill id>``: only [A-Za-z0-9_], short enough for PostgreSQL (63 bytes) and SQL Server."""
    safe = re.sub(r"[^A-Za-z0-9_]", "_", database)[:40]
    return f"drill_{safe}_{drill_id}"


def databases(d: Drill) -> list[ComponentResult]:
    artifacts = [a for a in read_set(d.store, d.stamp, d.set_id).artifacts if a.key.split("/")[2] == "databases"
                 and stripes.parse(a.key.rsplit("/", 1)[1])[1] == 1      # a striped backup once (its stripe 1)
                 and not is_log(a.key.rsplit("/", 1)[1])]                  # log backups: applied by the restore
    if not artifacts:
        def missing(r: ComponentResult) -> None:
            raise PermanentError(f"backup set {d.set_id} has no database artifact",
                                 hint="The db-backup or upload job of this set failed: see `appsvc-dr dlq show "
                                      "db-backup` / `dlq show upload`, or drill another set with --set.")
        return [timed("databases", "(none)", missing)]
    engine = d.engine or build_engine(d.settings.database)
    return [timed("databases", a.key.rsplit("/", 1)[1], lambda r, a=a: _database(d, engine, a, r))
            for a in artifacts]


def _named(key: str, exc: DrError) -> DrError:
    """Put the artifact's key in front of a fetch / decrypt error (e.g. "segment 0 failed authentication")."""
    if key not in exc.message:
        exc.message = f"{key}: {exc.message}"
    return exc


def _database(d: Drill, engine, artifact, r: ComponentResult) -> None:
    try:
        _drill_database(d, engine, artifact, r)
    except DrError as exc:
        raise _named(artifact.key, exc)


def _stem(engine, name: str) -> str:
    stem, dot, suffix = name.rpartition(".")
    made_by = SUFFIXES.get(dot + suffix)
    if made_by != engine.name or artifact_name(engine.name, stem) != name:
        raise PermanentError(f"{name} is a {made_by or 'unknown'} backup, the configured engine is {engine.name}",
                             hint="Drill with the settings of the stamp's db-backup worker "
                                  "(APPSVC_DR_DATABASE__ENGINE, __SERVER, ...).")
    return stem


def _drill_database(d: Drill, engine, artifact, r: ComponentResult) -> None:
    stem = _stem(engine, stripes.parse(artifact.key.rsplit("/", 1)[1])[0])   # x.bak.1of3 -> x.bak: all stripes
    r.bytes, target = artifact.plaintext_size, scratch_name(stem, d.drill_id)
    if d.verify_only:
        _verify_only(d, engine, stem, r)
        return
    r.what = f"{stem} → {target}"
    configured = d.settings.database
    options = RestoreOptions(expected_database=stem, force_disconnect=True, scratch=True)
    try:
        restored = restore_from_set(d.settings.staging, configured, engine, d.store, d.keys, stamp=d.stamp,
                                    set_id=d.set_id, database=stem, target=target,
                                    data_path=d.data_path or configured.restore_data_path,
                                    log_path=d.log_path or configured.restore_log_path, say=d.say, options=options)
        checked = engine.check_consistency(target)
    finally:
        if not d.keep:
            r.cleanup = _drop(engine, target)
    counts = f", {restored.tables} tables, {restored.rows} rows" if restored.tables is not None else ""
    warned = "".join(f"; WARNING: {w}" for w in restored.warnings)
    kept = f"kept (drop it with DROP DATABASE {target})" if d.keep else (
        "scratch database NOT dropped (see cleanup)" if r.cleanup else "scratch database dropped")
    r.detail = f"restored as {target} on {restored.server}: {restored.state}{counts}; {checked}; {kept}{warned}"


def _verify_only(d: Drill, engine, stem: str, r: ComponentResult) -> None:
    r.what = f"{stem} (verify only)"
    with staged_artifact(d.settings.staging, engine, d.store, d.keys, stamp=d.stamp, set_id=d.set_id,
                         database=stem, label=f"drill-{d.drill_id}", say=d.say) as path:
        engine.verify(path)
        files = engine.file_list(path) if hasattr(engine, "file_list") else None
    listed = f" and FILELISTONLY ({len(files)} files)" if files is not None else ""
    how = "RESTORE VERIFYONLY" if engine.name == "sqlserver" else "pg_restore --list and a full read of the archive"
    r.result = VERIFIED
    r.detail = (f"{how}{listed} passed; NOT restored (--verify-only): run the drill without --verify-only to "
                "prove it restores")


def _drop(engine, target: str) -> str | None:
    """Drop the scratch database; a failure is logged and returned (never raised: the restore's error, if any,
    is the result)."""
    try:
        engine.drop(target)
        return None
    except Exception as exc:  # noqa: BLE001 - reported separately, whatever it is
        text = (f"could not drop the scratch database {target} on {engine.server}: {describe(exc)} (how to fix: "
                f"{hint_for(exc) or 'drop it by hand'}; DROP DATABASE {target} - the drill login needs the right "
                "to create and drop databases)")
        log.warning("%s", text)
        return text
