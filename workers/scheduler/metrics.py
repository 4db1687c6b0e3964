"""The scheduler's Prometheus metrics, on a registry made per process (served by the runtime's StatusServer)."""
from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge

OUTCOMES = ("published", "already_claimed", "failed")


class ScheduleMetrics:
    def __init__(self, stamp: str, registry: CollectorRegistry | None = None) -> None:
        self.stamp = stamp
        self.registry = r = registry or CollectorRegistry()
        self.next_slot = Gauge("appsvc_dr_schedule_next_slot_timestamp_seconds",
                               "Unix time of the schedule's next slot", ["stamp", "schedule"], registry=r)
        self.last_published = Gauge("appsvc_dr_schedule_last_published_slot_timestamp_seconds",
                                    "Unix time of the newest slot published (by any scheduler of the stamp, read "
                                    "from the store at start)", ["stamp", "schedule"], registry=r)
        self.publishes = Counter("appsvc_dr_schedule_publishes", "Slots handled, by outcome (published, "
                                 "already_claimed: another scheduler had it, failed: not published)",
                                 ["stamp", "schedule", "outcome"], registry=r)

    def start(self, schedule: str, last: datetime | None) -> None:
        """Every label set at zero (so ``increase()`` sees the first event); the last slot from the store."""
        for outcome in OUTCOMES:
            self.publishes.labels(self.stamp, schedule, outcome)
        if last is not None:
            self.last_published.labels(self.stamp, schedule).set(last.timestamp())

    def next(self, schedule: str, slot: datetime) -> None:
        self.next_slot.labels(self.stamp, schedule).set(slot.timestamp())

    def outcome(self, schedule: str, outcome: str, slot: datetime | None = None) -> None:
        self.publishes.labels(self.stamp, schedule, outcome).inc()
        if outcome != "failed" and slot is not None:   # published, here or by another scheduler
            self.last_published.labels(self.stamp, schedule).set(slot.timestamp())
