"""Everything `recover plan` and `recover run` do before a change: choose the set, read it (the key must open
it), build the steps and check every target."""
from __future__ import annotations

from dataclasses import dataclass

from workers.artifacts.service import ArtifactStore
from workers.config import Settings
from workers.drill.results import read_markers
from workers.recover import plan as planning
from workers.recover.choose import Choice, choose_set, throughput
from workers.recover.contents import Contents, load
from workers.recover.model import Step, Targets
from workers.recover.preflight import Findings, check
from workers.recover.state import Recovery
from workers.storage.codec import KeyRing

COMPONENTS = ("secrets", "databases", "fileshare")


@dataclass
class Prepared:
    choice: Choice
    contents: Contents
    steps: list[Step]
    findings: Findings
    markers: list[dict]


def prepare(settings: Settings, store: ArtifactStore, keys: KeyRing, stamp: str, targets: Targets, *,
            set_id: str | None = None, latest: bool = False, force: bool = False,
            recovery: Recovery | None = None, engine=None) -> Prepared:
    markers = read_markers(store.backend, stamp)
    choice = choose_set(store.backend, stamp, markers, set_id or (recovery.set_id if recovery else None), latest)
    if recovery is not None:
        choice = Choice(choice.state, f"the set of recovery {recovery.recovery_id} (resumed)", choice.drilled)
    wanted = set(choice.state.planned or COMPONENTS) - set(targets.skip)
    targets.skip = tuple(c for c in COMPONENTS if c not in wanted)     # what the set does not hold is no step
    contents = load(store, keys, stamp, choice.state.set_id, wanted, cache_dir=settings.fileshare.cache_dir)
    steps = planning.build(contents, targets, throughput(markers),
                           targets.database_server or settings.database.server)
    started = recovery.started if recovery else (lambda step_id: False)
    findings = check(settings, targets, contents, force=force, started=started, engine=engine)
    return Prepared(choice, contents, steps, findings, markers)
