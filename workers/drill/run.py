"""Pick the backup set to drill and run the drill of each of its components.

Default: the newest *complete* set (its ``complete.json`` marker, or every planned component stored; newest by
requested time, see ``workers.artifacts.setscan.set_time``; a set dated in the future is never that one). ``--set ID`` drills that set even when incomplete (said so in the table).
Components: the ones asked for, else the set's planned ones, else the ones it holds.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

from workers.artifacts.setmanifest import read_set
from workers.artifacts.service import ArtifactStore
from workers.artifacts.retention import SetState, set_states
from workers.config import Settings
from workers.drill.checks import CHECKS, Drill
from workers.drill.results import DrillResult, write_marker
from workers.runtime.errors import ConfigurationError, DrError, PermanentError
from workers.storage.codec import KeyRing
from workers.storage.base import StorageBackend

log = logging.getLogger("appsvc_dr.drill")


def candidates(backend: StorageBackend, stamp: str) -> list[SetState]:
    """Every backup set of the stamp, oldest first (retention's view of them: one listing, small reads)."""
    return sorted(set_states(backend, stamp), key=lambda state: state.order)


def choose(found: Sequence[SetState], stamp: str, set_id: str | None = None) -> SetState:
    """The set asked for, else the newest complete one."""
    if set_id:
        match = [c for c in found if c.set_id == set_id]
        if not match:
            raise PermanentError(f"no backup set {set_id} for stamp {stamp}",
                                 hint="`appsvc-dr artifacts list --stamp STAMP` lists the sets.")
        return match[0]
    for ignored in (c for c in found if c.future):
        log.warning("backup set %s/%s is dated in the future: never drilled as the newest set (drill it with --set "
                    "if it is genuine; check the clock of whoever published it)", stamp, ignored.set_id)
    complete = [c for c in found if c.complete and not c.future]
    if not complete:
        raise PermanentError(f"stamp {stamp} has no complete backup set to drill",
                             hint="Check `appsvc-dr artifacts list --stamp STAMP` (and the stamp name); a set is "
                                  "complete once every planned component is stored. Drill an incomplete one "
                                  "with --set ID.")
    return complete[-1]


def components_of(candidate: SetState, present: set[str], asked: Sequence[str] | None) -> list[str]:
    if asked:
        unknown = sorted(set(asked) - set(CHECKS))
        if unknown:
            raise ConfigurationError(f"unknown component(s) {', '.join(unknown)}",
                                     hint=f"--components takes {', '.join(CHECKS)}.")
        wanted = set(asked)
    else:
        wanted = set(candidate.planned or present)
    return [c for c in CHECKS if c in wanted]


@contextlib.contextmanager
def scratch_dir(parent: Path | None, drill_id: str, keep: bool) -> Iterator[Path]:
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"appsvc-dr-drill-{drill_id}-", dir=parent))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def run_drill(settings: Settings, store: ArtifactStore, keys: KeyRing | None, stamp: str, *,
              set_id: str | None = None, components: Sequence[str] | None = None, scratch: Path | None = None,
              keep: bool = False, data_path: str | None = None, log_path: str | None = None,
              say: Callable[[str], None] = print, verify_only: bool = False) -> tuple[DrillResult, str | None]:
    """Drill one set; returns the result and the key of its stored marker (None if it could not be stored)."""
    chosen = choose(candidates(store.backend, stamp), stamp, set_id)
    present = read_set(store, stamp, chosen.set_id).components
    wanted = components_of(chosen, present, components)
    drill_id = uuid.uuid4().hex[:8]
    result = DrillResult(stamp, chosen.set_id, drill_id, datetime.now(timezone.utc), set_complete=chosen.complete)
    say(f"drilling {stamp}/{chosen.set_id} ({', '.join(wanted) or 'nothing'}); drill id {drill_id}")
    with scratch_dir(scratch, drill_id, keep) as where:
        drill = Drill(settings, store, keys, stamp, chosen.set_id, drill_id, where, keep=keep,
                      data_path=data_path, log_path=log_path, say=say, verify_only=verify_only)
        for component in wanted:
            result.components.extend(CHECKS[component](drill))
        if keep:
            say(f"kept the scratch directory {where}")
    result.finished_at = datetime.now(timezone.utc)
    try:
        return result, write_marker(store.backend, result)
    except DrError as exc:                  # e.g. read-only credentials: the drill itself still counts
        log.warning("could not store the drill result next to the set: %s", exc.message)
        return result, None
