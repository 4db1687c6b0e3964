"""What every component's drill gets (:class:`Drill`) and how one check becomes a result (:func:`timed`)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from workers.artifacts.service import ArtifactStore
from workers.config import Settings
from workers.drill.results import FAILED, ComponentResult
from workers.engines.base import DatabaseEngine
from workers.runtime.errors import describe, hint_for
from workers.storage.codec import KeyRing


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
    verify_only: bool = False                     # databases: verify the backups, restore nothing ("verified")


def timed(component: str, what: str, check: Callable[[ComponentResult], None]) -> ComponentResult:
    """Run one check; any error becomes a failed result with the error's message and how-to-fix hint."""
    result, started = ComponentResult(component, what), time.monotonic()
    try:
        check(result)
    except Exception as exc:  # noqa: BLE001 - a drill reports every failure instead of stopping
        result.result, result.error, result.hint = FAILED, describe(exc), hint_for(exc)
    result.seconds = round(time.monotonic() - started, 3)
    return result
