"""The RTO metrics for node_exporter's textfile collector, written atomically like the drill's:

* ``appsvc_dr_recovery_duration_seconds{stamp,step}`` — measured duration of each step of the newest recovery
  (``step="total"``: from its creation to its last automated step);
* ``appsvc_dr_estimated_rto_seconds{stamp}`` — the newest drill's measured restore time of every component."""
from __future__ import annotations

from datetime import datetime

from workers.recover.state import Recovery

DURATION = "appsvc_dr_recovery_duration_seconds"
ESTIMATED = "appsvc_dr_estimated_rto_seconds"


def total_seconds(recovery: Recovery) -> float | None:
    ends = [s.finished_at for s in recovery.steps if s.finished_at]
    if not ends:
        return None
    return round((datetime.fromisoformat(max(ends)) - datetime.fromisoformat(recovery.created_at)).total_seconds(), 3)


def write_textfile(path: str, recovery: Recovery | None, stamp: str, estimated: float | None) -> None:
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    duration = Gauge(DURATION, "Measured duration of each step of the newest recovery of a stamp (step=total: "
                     "wall clock from its start to its last automated step)", ["stamp", "step"], registry=registry)
    rto = Gauge(ESTIMATED, "Estimated recovery time of a stamp: the newest restore drill's measured restore time "
                "of every component", ["stamp"], registry=registry)
    if recovery is not None:
        for s in recovery.steps:
            if s.seconds is not None:
                duration.labels(stamp, s.step_id).set(s.seconds)
        total = total_seconds(recovery)
        if total is not None:
            duration.labels(stamp, "total").set(total)
    if estimated is not None:
        rto.labels(stamp).set(estimated)
    write_to_textfile(path, registry)
