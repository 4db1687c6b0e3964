"""What a restore drill found: per-component results, the table printed for operators, the drill-result
marker stored next to the set, and the Prometheus metric derived from the markers.

Marker: ``<stamp>/<set>/drills/<finished UTC>-<drill id>.json`` — when, which set, the overall result and each
component's result with its error and how-to-fix hint, signed like every stored object. Never secrets: the secrets check records only the
version id, the fingerprint and the number of top-level keys. The store stays the source of truth, so the
metric can be rebuilt anywhere with read access (``appsvc-dr drill --report --textfile F``).
"""
from __future__ import annotations

import io
import json
import logging
import socket
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Iterable

from contracts.envelope import is_future
from workers.artifacts.sets import set_prefix
from workers.artifacts.setscan import scan_sets
from workers.storage.base import ObjectNotFound, StorageBackend
from workers.storage.signing import sign_body, verified

PASSED, VERIFIED, FAILED = "passed", "verified", "failed"      # verified: checked, not restored
RESULTS = (PASSED, VERIFIED, FAILED)
DRILLS = "drills"
log = logging.getLogger(__name__)
METRIC = "appsvc_dr_last_restore_drill_timestamp_seconds"
ESTIMATED_RTO = "appsvc_dr_estimated_rto_seconds"
# A drill of a secondary copy (``--store NAME``, a mirror target) writes these instead, labelled with the copy's
# name: the same series from two textfiles would clash in node_exporter, and a drill of the off-site copy must not
# count as one of the primary (alerts AppsvcDrNoRecentRestoreDrill and AppsvcDrNoRecentSecondaryRestoreDrill).
SECONDARY_METRIC = "appsvc_dr_last_secondary_restore_drill_timestamp_seconds"
SECONDARY_RTO = "appsvc_dr_secondary_estimated_rto_seconds"


@dataclass
class ComponentResult:
    component: str                  # secrets | databases | fileshare
    what: str                       # the artifact / database / snapshot drilled
    result: str = PASSED
    bytes: int = 0
    seconds: float = 0.0
    detail: str = ""                # what was proven (or, on failure, what was being done)
    error: str | None = None
    hint: str | None = None
    cleanup: str | None = None      # what could not be cleaned up (a scratch database left behind), and how to

    @property
    def passed(self) -> bool:
        return self.result == PASSED

    @property
    def ok(self) -> bool:
        """Passed or verified: nothing failed."""
        return self.result != FAILED


@dataclass
class DrillResult:
    stamp: str
    backup_set_id: str
    drill_id: str
    started_at: datetime
    set_complete: bool = True
    finished_at: datetime | None = None
    components: list[ComponentResult] = field(default_factory=list)
    host: str = field(default_factory=socket.gethostname)

    @property
    def passed(self) -> bool:
        return self.result == PASSED

    @property
    def ok(self) -> bool:
        """Passed or verified (a verify-only drill): nothing failed."""
        return self.result != FAILED

    @property
    def result(self) -> str:
        """failed if any component failed (or none ran), verified if any was only verified, else passed."""
        if not self.components or any(not c.ok for c in self.components):
            return FAILED
        return VERIFIED if any(c.result == VERIFIED for c in self.components) else PASSED

    def to_json(self) -> dict:
        return {"format": 1, "kind": "restore-drill", "stamp": self.stamp, "backup_set_id": self.backup_set_id,
                "drill_id": self.drill_id, "host": self.host, "set_complete": self.set_complete,
                "started_at": self.started_at.isoformat(),
                "finished_at": (self.finished_at or self.started_at).isoformat(), "result": self.result,
                "components": [asdict(c) for c in self.components]}


# ------------------------------------------------------------------------------------------------ marker
def marker_key(result: DrillResult) -> str:
    finished = result.finished_at or result.started_at
    return f"{set_prefix(result.stamp, result.backup_set_id)}{DRILLS}/{finished:%Y%m%dT%H%M%SZ}-{result.drill_id}.json"


def write_marker(backend: StorageBackend, result: DrillResult) -> str:
    key = marker_key(result)
    body = sign_body(backend, key, json.dumps(result.to_json(), indent=2, sort_keys=True).encode())
    backend.put(key, io.BytesIO(body), size=len(body))
    return key


def read_markers(backend: StorageBackend, stamp: str) -> list[dict]:
    """Every drill marker of the stamp's sets (one listing of ``<stamp>/``), oldest first; damaged ones skipped."""
    found = []
    for objects in scan_sets(backend, stamp).values():
        for info in objects.objects:
            if f"/{DRILLS}/" not in info.key or not info.key.endswith(".json"):
                continue
            try:
                with backend.open(info.key) as stream:
                    data = json.loads(stream.read(1024 * 1024))
            except (ObjectNotFound, ValueError):
                continue
            data = verified(backend, info.key, data, "drill result") if isinstance(data, dict) else None
            if data is not None and data.get("kind") == "restore-drill":
                problem = marker_problem(data, stamp, info.key)
                if problem:
                    log.warning("ignoring drill result %s: %s", info.key, problem)
                else:
                    found.append(data)
    return sorted(found, key=lambda d: (str(d.get("finished_at")), str(d.get("drill_id"))))


MAX_SECONDS = 7 * 24 * 3600          # no component of a drill takes a week


def marker_problem(m: dict, stamp: str, key: str) -> str | None:
    """Why a drill result read from the store cannot be believed, or None. It drives the "last drill" metric
    and its alert, the estimated RTO and which set ``recover`` prefers, so a forged one must not make an overdue
    drill look fresh (a future time), a failed one look passed, or the RTO absurd."""
    if m.get("stamp") != stamp or f"/{m.get('backup_set_id')}/{DRILLS}/" not in key:
        return "its stamp or backup set is not the one it is stored under"
    times = [_aware(m.get(k)) for k in ("started_at", "finished_at")]
    if None in times or times[0] > times[1] or is_future(times[1]):          # type: ignore[operator]
        return "its times are not timezone-aware, out of order or in the future"
    components = m.get("components")
    if not isinstance(components, list) or len(components) > 100:
        return "its components are not a list of results"
    for c in components:
        seconds = c.get("seconds") if isinstance(c, dict) else None
        if not (isinstance(c, dict) and isinstance(c.get("component"), str) and c.get("result") in RESULTS
                and type(seconds) in (int, float) and 0 <= seconds <= MAX_SECONDS
                and type(c.get("bytes", 0)) is int and c.get("bytes", 0) >= 0):
            return "a component result is malformed (component, result, seconds 0..7 days, bytes)"
    derived = (FAILED if not components or any(c["result"] == FAILED for c in components) else
               VERIFIED if any(c["result"] == VERIFIED for c in components) else PASSED)
    if m.get("result") != derived:
        return f"its overall result {str(m.get('result'))[:20]!r} disagrees with its components ({derived})"
    return None


def _aware(value: object) -> datetime | None:
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return when if when is not None and when.tzinfo is not None else None


# ------------------------------------------------------------------------------------------------ metric
def last_by_result(markers: Iterable[dict]) -> dict[tuple[str, str], float]:
    """{(stamp, result): unix time the newest drill with that result finished}."""
    out: dict[tuple[str, str], float] = {}
    for m in markers:
        try:
            when = datetime.fromisoformat(str(m["finished_at"])).timestamp()
        except (KeyError, ValueError):
            continue
        key = (str(m.get("stamp")), m.get("result") if m.get("result") in (PASSED, VERIFIED) else FAILED)
        out[key] = max(out.get(key, 0.0), when)
    return out


def estimated_rto(markers: list[dict]) -> float | None:
    """Seconds the automatable part of a recovery of the markers' stamp takes, by its newest drill (passed or
    not): its components' measured restore durations added up. None without a drill."""
    if not markers:
        return None
    return round(sum(float(c.get("seconds") or 0) for c in markers[-1].get("components", [])), 3)


def write_textfile(path: str, latest: dict[tuple[str, str], float],
                   estimated: dict[str, float] | None = None, copy: str | None = None) -> None:
    """The metrics for node_exporter's textfile collector, written atomically (temp file, then rename): the
    newest drill per stamp and result, and ``estimated`` RTO seconds per stamp (:func:`estimated_rto`). ``copy``:
    the secondary copy (mirror target) the drills read, when not the primary: the secondary metrics, with
    ``store``."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    secondary = copy not in (None, "primary")
    where, store = (["store"], [copy]) if secondary else ([], [])     # the label and its value
    of = f"the secondary copy (mirror target) {copy}" if secondary else "the store"
    registry = CollectorRegistry()
    gauge = Gauge(SECONDARY_METRIC if secondary else METRIC,
                  f"Unix time the newest restore drill of a stamp from {of} finished, by result (passed; verified: "
                  "backups only verified, not restored; failed)", ["stamp", *where, "result"], registry=registry)
    for (stamp, result), when in sorted(latest.items()):
        gauge.labels(stamp, *store, result).set(when)
    rto = Gauge(SECONDARY_RTO if secondary else ESTIMATED_RTO,
                f"Estimated recovery time of a stamp's automatable steps from {of}: the newest restore drill's "
                "measured restore time of every component, added up", ["stamp", *where], registry=registry)
    for stamp, seconds in sorted((estimated or {}).items()):
        rto.labels(stamp, *store).set(seconds)
    write_to_textfile(path, registry)


# ------------------------------------------------------------------------------------------------- table
def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB" if n >= 1024 * 1024 else f"{n} B"


def table(result: DrillResult) -> list[str]:
    state = "complete" if result.set_complete else "INCOMPLETE"
    lines = [f"restore drill {result.drill_id} of {result.stamp}/{result.backup_set_id} ({state} set)",
             f"{'component':10} {'what':52} {'result':7} {'bytes':>11} {'seconds':>8}"]
    for c in result.components:
        lines.append(f"{c.component:10} {c.what[:52]:52} {c.result:7} {_size(c.bytes):>11} {c.seconds:>8.1f}")
    lines.append("")
    for c in result.components:
        if c.ok:
            lines.append(f"{'ok' if c.passed else 'VERIFIED':7} {c.component} {c.what}: {c.detail}")
        else:
            lines.append(f"FAILED  {c.component} {c.what}: {c.error}")
            lines.append(f"        how to fix: {c.hint}")
        if c.cleanup:
            lines.append(f"CLEANUP {c.component} {c.what}: {c.cleanup}")
    failed = sum(not c.ok for c in result.components)
    lines.append("")
    lines.append({PASSED: "drill PASSED: every component restored and checked",
                  VERIFIED: "drill VERIFIED: backups verified but NOT restored (--verify-only); this is not a "
                            "passed drill"}.get(result.result,
                  f"drill FAILED: {failed} of {len(result.components)} component(s) did not restore"))
    leftover = sum(bool(c.cleanup) for c in result.components)
    if leftover:
        lines.append(f"cleanup FAILED for {leftover} component(s): scratch data left behind (see CLEANUP above)")
    return lines


def report_lines(markers: list[dict], stamp: str, limit: int = 20) -> list[str]:
    if not markers:
        return [f"no restore drill has run for stamp {stamp}: run `appsvc-dr drill --stamp {stamp} --key KEY`"]
    latest = last_by_result(markers)
    lines = [f"{'finished (UTC)':20} {'backup set':27} {'result':7} {'drill':9} components"]
    for m in markers[-limit:]:
        parts = ", ".join(f"{c['component']}:{c['result']}" for c in m.get("components", []))
        lines.append(f"{str(m.get('finished_at'))[:19].replace('T', ' '):20} {m.get('backup_set_id', '?'):27} "
                     f"{m.get('result', '?'):7} {m.get('drill_id', '?'):9} {parts}")
    passed = latest.get((stamp, PASSED))
    when = datetime.fromtimestamp(passed, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if passed else "never"
    lines.append(f"\nlast successful restore drill of {stamp}: {when}")
    verified = latest.get((stamp, VERIFIED))
    if verified:
        lines.append(f"last verify-only drill (not restored) of {stamp}: "
                     f"{datetime.fromtimestamp(verified, timezone.utc):%Y-%m-%d %H:%M:%S UTC}")
    return lines
