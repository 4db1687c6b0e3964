"""`recover run`: the automatable steps executed with the restore commands' own code, each verified, each
outcome and duration recorded in the recovery's state file after every step.

Databases first (several at once, ``parallel``), then the file share, then the secrets (a 0600 file), then the
controller script and the checklist. A step the state file records as done is re-verified on the targets given now
(the database's tables and rows counted again, the share compared with the snapshot, the secrets file's SHA-256
against the set's fingerprint, the script and checklist against what this run writes: never the paths the state file
lists) and skipped when it still holds; otherwise it runs again. A failing step is recorded with its error and fix,
the others still run."""
from __future__ import annotations

import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from workers.artifacts.service import ArtifactStore
from workers.cli.output import write_atomically
from workers.config import Settings
from workers.dbbackup.restore import restore_from_set
from workers.engines.base import DatabaseEngine
from workers.fileshare.restore import Restorer
from workers.recover import controller
from workers.recover.contents import Contents
from workers.recover.model import CHECKLIST_NAME, DATABASE, FILESHARE, SCRIPT, SCRIPT_NAME, SECRETS, Step, Targets
from workers.recover.preflight import open_target
from workers.recover.state import DONE, FAILED, MANUAL, RUNNING, Recovery, now, save
from workers.repository.repo import Repository
from workers.runtime.errors import PermanentError, describe, hint_for
from workers.storage.codec import KeyRing

log = logging.getLogger("appsvc_dr.recover")


@dataclass
class Runner:
    settings: Settings
    store: ArtifactStore
    keys: KeyRing
    contents: Contents
    targets: Targets
    recovery: Recovery
    steps: list[Step]
    engine: DatabaseEngine | None = None
    force: bool = False
    parallel: int = 2
    say: Callable[[str], None] = print

    def run(self) -> Recovery:
        automated = {DATABASE: self._database, FILESHARE: self._fileshare, SECRETS: self._secrets,
                     SCRIPT: self._script}
        databases = [s for s in self.steps if s.kind == DATABASE]
        with ThreadPoolExecutor(max(1, self.parallel), thread_name_prefix="recover-db") as pool:
            list(pool.map(lambda s: self._step(s, automated[s.kind]), databases))
        for s in self.steps:
            if s.kind == DATABASE:
                continue
            if s.manual:
                self.recovery.step(s.step_id).status = MANUAL
            else:
                self._step(s, automated[s.kind])
        if all(st.status in (DONE, MANUAL) for st in self.recovery.steps):
            self.recovery.finished_at = self.recovery.finished_at or now()
        save(self.store.backend, self.recovery)
        return self.recovery

    # ----------------------------------------------------------------------------------------- one step
    def _step(self, step: Step, action: Callable[[Step, dict], str]) -> None:
        state = self.recovery.step(step.step_id)
        if state.status == DONE:
            try:
                self._verify(step, state.proof)
                self.say(f"skipped {step.step_id}: done in an earlier run and verified again")
                return
            except Exception as exc:  # noqa: BLE001 - no longer holds: run it again
                self.say(f"{step.step_id} was done but no longer verifies ({describe(exc)}): running it again")
        state.status, state.started_at, state.runs = RUNNING, now(), state.runs + 1
        state.error = state.hint = None
        save(self.store.backend, self.recovery)
        self.say(f"running {step.step_id}: {step.what} → {step.destination}")
        started, proof = time.monotonic(), {}
        try:
            state.detail = action(step, proof)
            state.proof, state.status = proof, DONE
        except Exception as exc:  # noqa: BLE001 - recorded with its fix; the other steps still run
            state.status, state.error, state.hint = FAILED, describe(exc), hint_for(exc)
            log.debug("step %s failed", step.step_id, exc_info=True)
        state.seconds = round(time.monotonic() - started, 3)
        state.finished_at = now()
        save(self.store.backend, self.recovery)
        self.say(f"{state.status:7} {step.step_id} in {state.seconds:.1f}s: " +
                 (state.detail if state.status == DONE else f"{state.error}\n        how to fix: {state.hint}"))

    def _verify(self, step: Step, proof: dict) -> None:
        if step.kind == DATABASE:
            engine, name = self._engine(), step.step_id.split(":", 1)[1]
            if not hasattr(engine, "count_rows"):         # SQL Server: ONLINE, and no restore or re-create since
                if "identity" not in proof:               # a state file from before identities were kept
                    engine.check(name)
                    return
                now_, then = engine.restore_identity(name), proof["identity"]     # type: ignore[attr-defined]
                if now_ != then:
                    raise PermanentError(f"[{name}] was restored or created again since this recovery restored it "
                                         f"(created {now_.get('created')}, last restore #{now_.get('restore_id')}; "
                                         f"then: created {_said(then, 'created')}, #{_said(then, 'restore_id')})")
                return
            tables, rows = engine.count_rows(name)        # type: ignore[attr-defined]
            if len(tables) != proof.get("tables") or sum(rows.values()) != proof.get("rows"):
                raise PermanentError(f"{len(tables)} tables, {sum(rows.values())} rows; restored were "
                                     f"{proof.get('tables')} tables, {proof.get('rows')} rows")
        elif step.kind == FILESHARE:
            self._share_matches()
        elif step.kind == SECRETS:                        # the target chosen now, not the paths the state lists
            out = self._secrets_out()
            if _sha256(out) != self.contents.secrets.get("fingerprint"):      # type: ignore[union-attr]
                raise PermanentError(f"{out} is missing or does not hold the set's secrets")
        else:
            for path, body in self._script_files().items():
                if _sha256(path) != hashlib.sha256(body).hexdigest():
                    raise PermanentError(f"{path} is missing or not what this recovery writes")

    def _engine(self) -> DatabaseEngine:
        if self.engine is None:
            from workers.engines.factory import build_engine
            self.engine = build_engine(self.settings.database)
        return self.engine

    # ----------------------------------------------------------------------------------------- actions
    def _database(self, step: Step, proof: dict) -> str:
        name = step.step_id.split(":", 1)[1]
        engine = self._engine()
        t = self.targets
        options = t.database.options(name, self.settings.staging.database_dir)
        result = restore_from_set(self.settings.staging, self.settings.database, engine, self.store, self.keys,
                                  stamp=self.recovery.stamp, set_id=self.recovery.set_id, database=name,
                                  target=name, data_path=t.data_path, log_path=t.log_path, options=options,
                                  say=lambda line: log.info("%s", line))
        proof.update(tables=result.tables, rows=result.rows, state=result.state)
        if result.tail_log:
            proof["tail_log"] = result.tail_log           # the log tail taken before the restore: kept
        if result.warnings:
            proof["warnings"] = list(result.warnings)     # what an override let through
        if hasattr(engine, "restore_identity"):          # what a resume compares: no restore since
            try:
                proof["identity"] = engine.restore_identity(name)
            except Exception as exc:  # noqa: BLE001 - restored all the same; a resume then checks ONLINE only
                log.warning("restored %s, but its restore history cannot be read (%s): a resume will only check "
                            "that it is ONLINE", name, describe(exc))
        if hasattr(engine, "count_rows"):
            self._verify(step, proof)                     # counted again on a fresh connection
        counts = f", {result.tables} tables, {result.rows} rows" if result.tables is not None else ""
        extra = "".join([f"; tail-log backup kept at {result.tail_log}" if result.tail_log else ""] +
                        [f"; WARNING: {w}" for w in result.warnings])
        return f"restored on {result.server}: {result.state}{counts}{extra}"

    def _fileshare(self, step: Step, proof: dict) -> str:
        manifest = self.contents.manifest
        tree = open_target(self.targets, create=True)
        try:
            report = Restorer(self._repo(), tree, keys=self.keys, transfers=self.settings.fileshare.transfers,
                              overwrite=self.force, retries=self.settings.fileshare.retries,
                              wait=self.settings.fileshare.wait).run(manifest)
        finally:
            tree.close()
        files = [e for e in manifest.entries if not e.is_dir]
        if not report.exact or report.files_restored + report.files_identical != len(files):
            first = (report.failed or report.renamed or [None])[0]
            raise PermanentError(f"{len(report.failed)} file(s) not restored, {len(report.renamed)} renamed" +
                                 (f", e.g. {first.path}: {first.reason}" if first else ""),
                                 hint=(first.hint if first and first.hint else "Fix what is listed and resume "
                                       "(`recover run --resume ID`): what is restored is kept."))
        self._share_matches()
        proof.update(snapshot=self.contents.snapshot, files=len(files), bytes=sum(e.size for e in files))
        return (f"{len(files)} files ({report.bytes_written} bytes written, {report.files_identical} already "
                f"identical), {report.dirs} directories, every SHA-256 verified; now run ReACL.cmd")

    def _repo(self) -> Repository:
        return Repository(self.store, self.recovery.stamp, cache_dir=self.settings.fileshare.cache_dir)

    def _share_matches(self) -> None:
        """The target holds every entry of the snapshot, same size and mtime (one listing per directory)."""
        tree = open_target(self.targets)
        try:
            plan = Restorer(self._repo(), tree, keys=self.keys).plan(self.contents.manifest)
        finally:
            tree.close()
        off = [s for s in plan.steps if s.action not in ("check", "keep")]
        if off:
            raise PermanentError(f"{len(off)} entries differ from the snapshot, e.g. {off[0].entry.path} "
                                 f"({off[0].action})", hint="Resume the recovery: the file share step runs again.")

    def _secrets_out(self) -> Path:
        return Path(self.targets.secrets_out).absolute()     # type: ignore[arg-type]

    def _secrets(self, step: Step, proof: dict) -> str:
        out = self._secrets_out()
        key = self.contents.secrets["key"]                   # type: ignore[index]
        write_atomically(out, lambda stream: self.store.get(key, stream, keys=self.keys))
        digest = _sha256(out)
        if digest != self.contents.secrets.get("fingerprint"):   # type: ignore[union-attr]
            raise PermanentError(f"{out} does not match the set's secrets fingerprint",
                                 hint="Restore the secrets of another set (`appsvc-dr secrets list`).")
        proof["sha256"] = {str(out): digest}
        return f"{out} (mode 0600, fingerprint {digest[:12]} verified): copy it to CN0-VM, then delete it"

    def _script_files(self) -> dict[Path, bytes]:
        """The controller script and the checklist as this run writes them (for the targets given now)."""
        out = Path(self.targets.out_dir or ".").absolute()
        ids = dict(stamp=self.recovery.stamp, set_id=self.recovery.set_id, recovery_id=self.recovery.recovery_id)
        return {out / SCRIPT_NAME: controller.script(self.targets, **ids).encode("utf-8-sig"),
                out / CHECKLIST_NAME: controller.checklist(self.steps, **ids).encode("utf-8")}

    def _script(self, step: Step, proof: dict) -> str:
        files = self._script_files()
        for path, body in files.items():
            write_atomically(path, lambda stream, b=body: stream.write(b), mode=0o644)
        proof["sha256"] = {str(p): _sha256(p) for p in files}
        script, checklist = files
        return f"wrote {script} and {checklist}"


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _said(identity: object, key: str) -> str:
    """A field of a restore identity read back from the state file (the store's: shown, never trusted)."""
    return str(identity.get(key) if isinstance(identity, dict) else None)[:40]
