"""Which backup set a recovery restores, and how long each step should take.

Default: the newest complete set that passed a restore drill, else the newest complete set (said so: never
proven to restore). Durations are estimated from the newest passed drill's measured throughput per component
(bytes / seconds); without one, 'unknown'."""
from __future__ import annotations

from dataclasses import dataclass

from workers.artifacts.retention import SetState
from workers.drill.results import PASSED, estimated_rto
from workers.drill.run import candidates, choose
from workers.runtime.errors import PermanentError
from workers.storage.base import StorageBackend

__all__ = ["Choice", "choose_set", "estimated_rto", "throughput"]


@dataclass(frozen=True)
class Choice:
    state: SetState
    reason: str                     # why this set (printed with the plan)
    drilled: bool                   # a drill of this set passed


def choose_set(backend: StorageBackend, stamp: str, markers: list[dict], set_id: str | None = None,
               latest: bool = False) -> Choice:
    found = candidates(backend, stamp)
    passed = {str(m.get("backup_set_id")) for m in markers if m.get("result") == PASSED}
    if set_id:
        state = choose(found, stamp, set_id)
        if not state.complete:
            raise PermanentError(f"backup set {set_id} of {stamp} is incomplete: a recovery needs every component",
                                 hint="Pick a complete set (`appsvc-dr artifacts list --stamp STAMP`) or leave "
                                      "out --set.")
        return Choice(state, "asked for with --set" + ("" if state.set_id in passed else
                                                       "; no restore drill of it passed"), state.set_id in passed)
    newest = choose(found, stamp)                       # newest complete, never one dated in the future
    if latest:
        return Choice(newest, "the newest complete set (--latest)", newest.set_id in passed)
    drilled = [c for c in found if c.complete and not c.future and c.set_id in passed]
    if drilled:
        best = drilled[-1]
        why = "the newest complete set that passed a restore drill"
        if best.set_id != newest.set_id:
            why += f" (the newer {newest.set_id} was never drilled successfully: pass --latest to use it)"
        return Choice(best, why, True)
    return Choice(newest, "the newest complete set; NO restore drill of any set passed, so it is not proven to "
                  "restore (run `appsvc-dr drill` first if there is time)", False)


def throughput(markers: list[dict]) -> dict[str, float]:
    """Bytes per second per component (secrets, databases, fileshare) measured by the newest passed drill."""
    for marker in reversed(markers):
        if marker.get("result") != PASSED:
            continue
        sums: dict[str, list[float]] = {}
        for c in marker.get("components", []):
            if c.get("result") == PASSED and float(c.get("seconds") or 0) > 0 and int(c.get("bytes") or 0) > 0:
                pair = sums.setdefault(str(c["component"]), [0.0, 0.0])
                pair[0] += int(c["bytes"])
                pair[1] += float(c["seconds"])
        return {k: b / s for k, (b, s) in sums.items()}
    return {}
