"""The drill of each component, built on the restore commands' own code and aimed at scratch targets only:

* secrets — decrypt the set's SystemSecrets.json version, check its fingerprint and that it is a non-empty
  JSON object. Its content is never printed, logged or recorded.
* databases — restore each database artifact of the set as a scratch database ``drill_<db>_<drill id>`` on
  the configured server (PostgreSQL: pg_restore, then tables and rows counted; SQL Server: RESTORE ... WITH
  MOVE to scratch file names, then ONLINE checked), then drop it. SQL Server without a data path for the
  scratch files falls back to RESTORE VERIFYONLY + FILELISTONLY.
* fileshare — restore the set's snapshot into a scratch directory (every file's SHA-256 verified as it is
  written), then remove it.
"""
from __future__ import annotations

import io
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from workers.artifacts import stripes
from workers.artifacts.logchain import is_log
from workers.artifacts.setmanifest import read_set
from workers.artifacts.service import ArtifactStore
from workers.config import Settings
from workers.engines.base import DatabaseEngine
from workers.engines.factory import build_engine
from workers.dbbackup.handler import artifact_name
from workers.dbbackup.restore import restore_from_set, staged_artifact
from workers.drill.results import FAILED, ComponentResult
from workers.fileshare.restore import Restorer, load_manifest, snapshot_of_set
from workers.fileshare.tree import LocalTree
from workers.repository.repo import Repository
from workers.runtime.errors import DrError, PermanentError, describe, hint_for
from workers.secrets.versions import set_reference
from workers.storage.codec import KeyRing

SUFFIXES = {".dump": "postgres", ".bak": "sqlserver"}


@dataclass
class Drill:
    settings: Settings
    store: ArtifactStore
    keys: KeyRing | None
    stamp: str
    set_id: str
    drill_id: str
    scratch: Path
    keep: bool = False
    data_path: str | None = None
    log_path: str | None = None
    say: Callable[[str], None] = print
    engine: DatabaseEngine | None = None          # default: built from the settings (tests pass a fake one)


def timed(component: str, what: str, check: Callable[[ComponentResult], None]) -> ComponentResult:
    """Run one check; any error becomes a failed result with the error's message and how-to-fix hint."""
    result, started = ComponentResult(component, what), time.monotonic()
    try:
        check(result)
    except Exception as exc:  # noqa: BLE001 - a drill reports every failure instead of stopping
        result.result, result.error, result.hint = FAILED, describe(exc), hint_for(exc)
    result.seconds = round(time.monotonic() - started, 3)
    return result


# ------------------------------------------------------------------------------------------------ secrets
def secrets(d: Drill) -> list[ComponentResult]:
    def check(r: ComponentResult) -> None:
        ref = set_reference(d.store, d.stamp, d.set_id, d.keys)
        r.what = f"SystemSecrets.json {ref.get('version_id', '?')}"
        plain = io.BytesIO()
        record = d.store.get(ref["key"], plain, keys=d.keys)       # decrypts; raises unless every hash matches
        r.bytes = record.plaintext_size
        if record.plaintext_sha256 != ref.get("fingerprint"):
            raise PermanentError(f"the set names secrets fingerprint {str(ref.get('fingerprint'))[:12]}, the "
                                 f"stored version holds {record.plaintext_sha256[:12]}",
                                 hint="The set's secrets reference or the version was altered: restore the "
                                      "secrets of another set (`appsvc-dr secrets list`).")
        try:
            data = json.loads(plain.getvalue())
        except ValueError:
            data = None                    # the decoder's message may quote content: never pass it on
        finally:
            plain.seek(0)
            plain.truncate()
        if not isinstance(data, dict) or not data:
            raise PermanentError("the decrypted SystemSecrets.json is not a non-empty JSON object",
                                 hint="Restore-AppServiceStamp cannot use it: export the secrets again from the "
                                      "Azure Stack Hub administrator portal and publish them "
                                      "(`appsvc-dr publish secrets-rotated --file ...`).")
        r.detail = (f"decrypted, fingerprint {record.plaintext_sha256[:12]} verified, a JSON object with "
                    f"{len(data)} keys (content not shown)")
    return [timed("secrets", "SystemSecrets.json", check)]


# ---------------------------------------------------------------------------------------------- databases
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
        _restore_database(d, engine, artifact, r)
    except DrError as exc:
        raise _named(artifact.key, exc)


def _restore_database(d: Drill, engine, artifact, r: ComponentResult) -> None:
    name = stripes.parse(artifact.key.rsplit("/", 1)[1])[0]       # x.bak.1of3 -> x.bak: all stripes restored
    stem, dot, suffix = name.rpartition(".")
    made_by = SUFFIXES.get(dot + suffix)
    if made_by != engine.name or artifact_name(engine.name, stem) != name:
        raise PermanentError(f"{name} is a {made_by or 'unknown'} backup, the configured engine is {engine.name}",
                             hint="Drill with the settings of the stamp's db-backup worker "
                                  "(APPSVC_DR_DATABASE__ENGINE, __SERVER, ...).")
    r.bytes, target = artifact.plaintext_size, scratch_name(stem, d.drill_id)
    data_path = d.data_path or d.settings.database.restore_data_path
    if engine.name == "sqlserver" and not data_path:
        r.what = f"{stem} (verify only)"
        with staged_artifact(d.settings.staging, engine, d.store, d.keys, stamp=d.stamp, set_id=d.set_id,
                             database=stem, label=f"drill-{d.drill_id}", say=d.say) as path:
            engine.verify(path)
            files = engine.file_list(path)               # type: ignore[attr-defined]
        r.detail = (f"RESTORE VERIFYONLY and FILELISTONLY ({len(files)} files) passed; not restored: give "
                    "--data-path (a directory SQL Server can write) to restore into a scratch database")
        return
    r.what = f"{stem} → {target}"
    try:
        restored = restore_from_set(d.settings.staging, d.settings.database, engine, d.store, d.keys, stamp=d.stamp,
                                    set_id=d.set_id, database=stem, target=target, data_path=data_path,
                                    log_path=d.log_path, say=d.say)
    finally:
        if not d.keep:
            _drop(engine, target)
    counts = f", {restored.tables} tables, {restored.rows} rows" if restored.tables is not None else ""
    r.detail = (f"restored as {target} on {restored.server}: {restored.state}{counts}; "
                + (f"kept (drop it with DROP DATABASE {target})" if d.keep else "scratch database dropped"))


def _drop(engine, target: str) -> None:
    try:
        engine.drop(target)
    except Exception as exc:  # noqa: BLE001
        raise PermanentError(f"could not drop the scratch database {target} on {engine.server}: {describe(exc)}",
                             hint=f"Drop it by hand (DROP DATABASE {target}); the drill login needs the right to "
                                  "create and drop databases.") from exc


# ---------------------------------------------------------------------------------------------- fileshare
def fileshare(d: Drill) -> list[ComponentResult]:
    def check(r: ComponentResult) -> None:
        repo = Repository(d.store, d.stamp)              # no cache: everything is read from the store
        snapshot = snapshot_of_set(repo, d.set_id)
        r.what = f"snapshot {snapshot}"
        manifest = load_manifest(repo, snapshot, d.keys)
        target_dir = d.scratch / f"fileshare-{d.drill_id}"
        target = LocalTree(target_dir, create=True)
        try:
            report = Restorer(repo, target, keys=d.keys, transfers=d.settings.fileshare.transfers).run(manifest)
        finally:
            target.close()
            if not d.keep:
                shutil.rmtree(target_dir, ignore_errors=True)
        files = [e for e in manifest.entries if not e.is_dir]
        if report.files_restored != len(files) or report.bytes_written != sum(e.size for e in files):
            raise PermanentError(f"restored {report.files_restored} of {len(files)} files "
                                 f"({report.bytes_written} bytes)", hint="Run the drill again with --keep and "
                                 "compare the scratch directory with `appsvc-dr snapshots diff`.")
        r.bytes = report.bytes_written
        partial = f"; partial snapshot: {len(manifest.skipped)} file(s) were in use" if manifest.partial else ""
        where = f"kept in {target_dir}" if d.keep else "scratch directory removed"
        r.detail = (f"{len(files)} files, {report.dirs} directories restored, every SHA-256 verified; "
                    f"{where}{partial}")
    return [timed("fileshare", "snapshot", check)]


CHECKS = {"secrets": secrets, "databases": databases, "fileshare": fileshare}
