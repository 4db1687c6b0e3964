"""The RTO metric of a recovery for node_exporter's textfile collector, written atomically like the drill's:

* ``appsvc_dr_recovery_duration_seconds{stamp,step}`` — measured duration of each step of the newest recovery
  (``step="total"``: from its creation to its last automated step).

Its estimate, ``appsvc_dr_estimated_rto_seconds{stamp}``, is the drill's textfile's (``workers.drill.results``:
the newest drill, rewritten by every weekly drill): one writer, so one node_exporter may collect both files
without a duplicate series."""
from __future__ import annotations

from datetime import datetime

from workers.drill.results import ESTIMATED_RTO as ESTIMATED
from workers.recover.state import Recovery

DURATION = "appsvc_dr_recovery_duration_seconds"
__all__ = ["DURATION", "ESTIMATED", "total_seconds", "write_textfile"]


def total_seconds(recovery: Recovery) -> float | None:
    ends = [s.finished_at for s in recovery.steps if s.finished_at]
    if not ends:
        return None
    return round((datetime.fromisoformat(max(ends)) - datetime.fromisoformat(recovery.created_at)).total_seconds(), 3)


def write_textfile(path: str, recovery: Recovery) -> None:
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    duration = Gauge(DURATION, "Measured duration of each step of the newest recovery of a stamp (step=total: "
                     "wall clock from its start to its last automated step)", ["stamp", "step"], registry=registry)
    for s in recovery.steps:
        if s.seconds is not None:
            duration.labels(recovery.stamp, s.step_id).set(s.seconds)
    total = total_seconds(recovery)
    if total is not None:
        duration.labels(recovery.stamp, "total").set(total)
    write_to_textfile(path, registry)
