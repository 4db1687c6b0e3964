"""Every target checked before anything changes; the result is a precise list of what to fix, each with how.

* databases — the server is reachable, the login may create / drop / restore (the engine's
  ``restore_preflight``), and each target database is missing or empty (a non-empty one only with --force);
* file share — the target (or, when it does not exist yet, its nearest existing parent) is reachable and
  writable (a probe file is written and removed), empty (else --force), with room for the snapshot;
* secrets — the output file's directory is writable and the file does not exist (else --force);
* the key opens the set and the verify key matches its signatures (``contents``).

A step this recovery already started (a resumed run) may find its own partial work: that is not "non-empty".
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from workers.config import Settings
from workers.engines.base import DatabaseEngine
from workers.engines.factory import build_engine
from workers.engines.preflight import Problem, TargetState
from workers.fileshare.opener import open_tree
from workers.fileshare.tree import Tree
from workers.recover.contents import Contents
from workers.recover.controller import is_windows_path
from workers.recover.model import DatabaseFlags, Targets, size_text
from workers.runtime.errors import describe, hint_for
from workers.smb.unc import split_unc

MARGIN = 1.05                      # room asked for beyond the snapshot's bytes (directories, metadata)


@dataclass
class Findings:
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)            # what was checked and found fine
    databases: list[TargetState] = field(default_factory=list)

    def failed(self, what: str, exc: Exception, fix: str | None = None) -> None:
        self.problems.append(Problem(f"{what}: {describe(exc)}", fix or hint_for(exc) or "See the message."))


def check(settings: Settings, targets: Targets, contents: Contents, *, force: bool = False,
          started: Callable[[str], bool] = lambda step_id: False,
          engine: DatabaseEngine | None = None) -> Findings:
    found = Findings(problems=list(contents.problems))
    if "databases" not in targets.skip and contents.databases:
        _databases(settings, targets, contents, found, force, started, engine)
    if "fileshare" not in targets.skip and contents.manifest is not None:
        _fileshare(targets, contents.fileshare_size or 0, found, force or started("fileshare"))
    if "secrets" not in targets.skip:
        _secrets(targets, found, force or started("secrets"))
    _out_dir(targets, found)
    if not is_windows_path(targets.controller_secrets):
        found.problems.append(Problem(f"{targets.controller_secrets!r} is no absolute Windows path: the controller "
                                      "script runs on CN0-VM (Windows)", r"Pass --controller-secrets-path "
                                      r"C:\AppServiceRecovery\SystemSecrets.json (or leave it out: that is the "
                                      "default)."))
    return found


# ---------------------------------------------------------------------------------------------- databases
def _databases(settings: Settings, targets: Targets, contents: Contents, found: Findings, force: bool, started,
               engine) -> None:
    try:
        engine = engine or build_engine(settings.database)
    except Exception as exc:  # noqa: BLE001 - every problem is listed
        found.failed("the database engine cannot be built", exc)
        return
    wrong = [a.database for a in contents.databases if a.engine != engine.name]
    if wrong:
        found.problems.append(Problem(f"{', '.join(wrong)}: backups of another engine than the configured "
                                      f"{engine.name}", "Recover with the stamp's db-backup settings "
                                      "(APPSVC_DR_DATABASE__ENGINE, __SERVER, ...)."))
        return
    names = [a.database for a in contents.databases]
    flags = targets.database
    tail_dir = settings.staging.database_dir if settings is not None else None
    _flag_notes(flags, engine.name, tail_dir, found)
    preflight = getattr(engine, "restore_preflight", None)
    if preflight is None:
        # An engine without a restore pre-flight (PostgreSQL and SQL Server have one) is only proven
        # reachable; permissions and the targets' state are then the operator's to check.
        try:
            engine.check("master")
            found.notes.append(f"database server {engine.server} reachable; {engine.name} offers no restore "
                               "pre-flight here: check the login may create and replace the target databases, and "
                               "that they may be replaced")
        except Exception as exc:  # noqa: BLE001
            found.failed(f"database server {engine.server} not usable", exc)
        return
    try:
        states = preflight(names, flags.options(None, tail_dir))
    except Exception as exc:  # noqa: BLE001
        found.failed(f"database server {engine.server} not usable", exc)
        return
    found.databases = states
    for state in states:
        found.problems.extend(state.problems)
        step_id = f"database:{state.database}"
        if not state.empty and not (force or started(step_id)):
            found.problems.append(Problem(
                f"database {state.database!r} on {engine.server} exists and holds {state.tables} table(s): a "
                "restore would replace it", "Pass --force to replace it (after making sure it is the stamp's "
                "own, now useless, copy), or drop it, or restore to another server (--database-server)."))
        else:
            what = ("missing (created)" if not state.exists else "empty" if state.empty else
                    "restored by this recovery" if started(step_id) else "replaced (--force)")
            found.notes.append(f"database {state.database!r} on {engine.server}: {what}; permissions ok"
                               if not state.problems else f"database {state.database!r}: see the problems")


SQLSERVER_ONLY = ("force_disconnect", "tail_log_backup", "allow_no_checksum")


def _flag_notes(flags: DatabaseFlags, engine: str, tail_dir: str | None, found: Findings) -> None:
    """What each database override given will do (or that the engine has no use for it)."""
    said = {"force_disconnect": "open sessions of an existing target are ended (SET SINGLE_USER WITH ROLLBACK "
                                "IMMEDIATE: their open transactions roll back)",
            "tail_log_backup": "each ONLINE existing target's log tail is backed up first (BACKUP LOG ... WITH "
                               f"NORECOVERY) into {tail_dir} (as the server sees it) and kept",
            "allow_database_mismatch": "a backup of another database than the set names, or over another "
                                       "database, is restored with a warning instead of refused",
            "allow_no_checksum": "a backup without page checksums is restored with a warning (run DBCC CHECKDB "
                                 "afterwards)"}
    for name, on in asdict(flags).items():
        if not on:
            continue
        flag = "--" + name.replace("_", "-")
        if engine != "sqlserver" and name in SQLSERVER_ONLY:
            found.notes.append(f"{flag}: SQL Server only, nothing to do for {engine}")
        else:
            found.notes.append(f"{flag}: {said[name]}")


# ---------------------------------------------------------------------------------------------- file share
def open_target(targets: Targets, path: str | None = None, *, create: bool = False) -> Tree:
    return open_tree(path or targets.fileshare or "", username=targets.fileshare_username,
                     password=targets.fileshare_password, port=targets.fileshare_port,
                     encrypt=targets.fileshare_encrypt, create=create)


def _parent(path: str) -> str | None:
    """The path one level up; None above a share root (``\\\\host\\share``) or the file system root."""
    unc = split_unc(path)
    if unc is not None:
        return None if len(unc) <= 2 else "\\\\" + "\\".join(unc[:-1])
    parent = os.path.dirname(path.rstrip("/"))
    return None if parent == path else parent


def _fileshare(targets: Targets, needed: int, found: Findings, force: bool) -> None:
    where = targets.fileshare
    if not where:
        found.problems.append(Problem("no file-share target given", r"Pass --fileshare-target \\server\share "
                                      "(the restored content share) or a local directory, or --skip fileshare."))
        return
    probe_at = where
    try:
        tree = open_target(targets)
        try:
            exists = tree.exists()
            if exists:
                tree.connect()
                present = [s.name for s in tree.listdir("")]
                if present and not force:
                    found.problems.append(Problem(
                        f"file-share target {where} is not empty ({len(present)} entries, e.g. {present[0]!r})",
                        "Pass --force to restore over it (files already identical are kept, others replaced), or "
                        "empty it, or pick an empty --fileshare-target."))
            free = tree.free_space()
        finally:
            tree.close()
        while not exists:                       # probe the nearest existing parent: the target gets created there
            parent = _parent(probe_at)
            if parent is None:
                found.problems.append(Problem(f"file-share target {where}: nothing above it exists",
                                              "Check --fileshare-target: the share (or directory) must exist."))
                return
            probe_at = parent
            with _closing(open_target(targets, probe_at)) as tree:
                exists = tree.exists()
        _probe_write(targets, probe_at)
    except Exception as exc:  # noqa: BLE001
        found.failed(f"file-share target {probe_at} is not reachable or not writable", exc,
                     _share_fix(exc, where))
        return
    if free < needed * MARGIN:
        found.problems.append(Problem(f"file-share target {where} has {size_text(free)} free, the snapshot needs "
                                      f"{size_text(int(needed * MARGIN))}", "Free space on the file server (or grow "
                                      "the volume / the share's quota), or pick another --fileshare-target."))
    else:
        found.notes.append(f"file-share target {where}: reachable, writable, {size_text(free)} free for "
                           f"{size_text(needed)}" + ("" if probe_at == where else " (created on restore)"))


class _closing:
    def __init__(self, tree: Tree) -> None:
        self.tree = tree

    def __enter__(self) -> Tree:
        return self.tree

    def __exit__(self, *exc) -> None:
        self.tree.close()


def _probe_write(targets: Targets, at: str) -> None:
    name = f".appsvc-dr-probe-{uuid.uuid4().hex[:8]}"
    with _closing(open_target(targets, at)) as tree:
        tree.connect()
        tree.write_file(name, b"appsvc-dr write probe", time.time_ns(), None)      # type: ignore[attr-defined]
        tree.remove(name)                                                         # type: ignore[attr-defined]


def _share_fix(exc: Exception, where: str) -> str:
    text = describe(exc).lower()
    if "denied" in text or "access" in text or "read-only" in text or "readonly" in text:
        return (f"Give the restoring account write access to {where} (share and NTFS permissions: the "
                "FileShareOwner account, Full Control), or pass --fileshare-username / --fileshare-password-env "
                "of an account that has it.")
    return (hint_for(exc) or "") + f" Check --fileshare-target {where!r}, --fileshare-port and that the file " \
        "server is up and reachable from here (TCP 445)."


# ------------------------------------------------------------------------------------------------- secrets
def _secrets(targets: Targets, found: Findings, force: bool) -> None:
    out = targets.secrets_out
    if out is None:
        found.problems.append(Problem("no secrets output file given", "Pass --secrets-out FILE (written mode 0600, "
                                      "to be copied to the controller), or --skip secrets."))
        return
    out = Path(out).absolute()
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK | os.X_OK):
        found.problems.append(Problem(f"cannot write {out}: its directory is missing or not writable",
                                      f"Create {out.parent} (private to you: mode 0700) or pick another "
                                      "--secrets-out."))
    elif out.exists() and not force:
        found.problems.append(Problem(f"{out} exists", "Remove it (it may be an older SystemSecrets.json), or "
                                      "pass --force to replace it."))
    else:
        found.notes.append(f"secrets output {out}: writable")


def _out_dir(targets: Targets, found: Findings) -> None:
    out = Path(targets.out_dir or ".").absolute()
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        found.problems.append(Problem(f"cannot write the controller script into {out}",
                                      "Pick a writable --out-dir."))
