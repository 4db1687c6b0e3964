"""Prometheus metrics as middleware. Metrics live in a registry made per process, never at import time."""
from __future__ import annotations

import threading
import time
from typing import Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from workers.middleware.base import Middleware

DURATION_BUCKETS = (0.05, 0.1, 0.5, 1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 21600)
OUTCOMES = ("ok", "retried", "dead_lettered", "rejected")
FAILED_OUTCOMES = ("dead_lettered", "rejected")
# Why the runtime dead-letters a decoded event (workers.runtime.processing); rejections of undecodable
# messages carry the contract error's reason and appear on their first occurrence.
DEAD_LETTER_REASONS = ("permanent", "retries-exhausted", "crash-loop", "too-deep")


class Metrics:
    """Every ``appsvc_dr_*`` metric, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter("appsvc_dr_events_consumed", "Events consumed, by outcome (ok, retried, "
                                "dead_lettered, rejected, duplicate)", ["worker", "event_type", "outcome"],
                                registry=r)
        self.duration = Histogram("appsvc_dr_job_duration_seconds", "Job duration", ["worker", "event_type"],
                                  buckets=DURATION_BUCKETS, registry=r)
        self.in_progress = Gauge("appsvc_dr_jobs_in_progress", "Jobs running now", ["worker"], registry=r)
        self.retries = Counter("appsvc_dr_retries", "Jobs scheduled for retry", ["worker", "event_type"],
                               registry=r)
        self.last_success = Gauge("appsvc_dr_last_success_timestamp_seconds",
                                  "Unix time of the last successful job", ["worker", "event_type"], registry=r)
        self.bytes = Counter("appsvc_dr_bytes_processed", "Bytes processed", ["worker", "kind"], registry=r)
        self.connected = Gauge("appsvc_dr_broker_connected", "1 when consuming from RabbitMQ", ["worker"],
                               registry=r)
        self.published = Counter("appsvc_dr_events_published", "Events published", ["worker", "event_type"],
                                 registry=r)
        self.dead_letters = Counter("appsvc_dr_dead_letters", "Messages dead-lettered, by reason",
                                    ["worker", "event_type", "reason"], registry=r)
        self.last_failure = Gauge("appsvc_dr_last_failure_timestamp_seconds",
                                  "Unix time a job was last dead-lettered or rejected (alerts need no history)",
                                  ["worker", "event_type", "outcome"], registry=r)
        self.secrets_newest = Gauge("appsvc_dr_secrets_newest_version_timestamp_seconds",
                                    "Unix time the newest stored SystemSecrets.json version was rotated",
                                    ["stamp"], registry=r)
        # -- ops-lifecycle (issue 16): a rotation seen but not handled means the stored secrets are stale --
        self.secrets_rotation_seen = Gauge("appsvc_dr_secrets_last_rotation_seen_timestamp_seconds",
                                           "rotated_at of the newest secrets-rotated event the secrets worker received",
                                           ["stamp"], registry=r)
        self.secrets_rotation_handled = Gauge("appsvc_dr_secrets_last_rotation_handled_timestamp_seconds",
                                              "rotated_at of the newest secrets-rotated event stored (or found "
                                              "unchanged)", ["stamp"], registry=r)
        self.secrets_rotations = Counter("appsvc_dr_secrets_rotations", "Secret rotations seen, by outcome "
                                         "(stored, duplicate)", ["stamp", "outcome"], registry=r)
        self.mirror_lag = Gauge("appsvc_dr_mirror_lag_seconds", "Seconds the oldest object not yet on a mirror "
                                "target has waited (0: caught up)", ["target"], registry=r)
        self.mirror_backlog = Gauge("appsvc_dr_mirror_backlog", "Objects not yet on a mirror target", ["target"],
                                    registry=r)
        self.store_free = Gauge("appsvc_dr_store_free_bytes", "Bytes a store (primary or mirror target) can still "
                                "take, measured before and after each backup set", ["target"], registry=r)
        self.store_used = Gauge("appsvc_dr_store_used_bytes", "Bytes a stamp's objects take in a store",
                                ["target", "stamp"], registry=r)
        self.store_next_set = Gauge("appsvc_dr_store_next_set_bytes", "Bytes the next backup set is forecast to "
                                    "take in a store (the largest of the newest sets, plus 10 %)", ["target"],
                                    registry=r)
        self.log_backup_age = Gauge("appsvc_dr_database_log_backup_age_seconds", "SQL Server: seconds since the "
                                    "newest log backup in msdb, read after each full backup (+Inf: none)",
                                    ["database"], registry=r)
        self.log_warnings = Counter("appsvc_dr_database_log_warnings", "SQL Server: full backups of a FULL-recovery "
                                    "database whose log is not backed up, by reason (no-log-backup, "
                                    "log-backup-overdue, log-reuse-wait)", ["database", "reason"], registry=r)
        self.notifications = Counter("appsvc_dr_notifications", "Notifications by sink and outcome "
                                     "(sent, grouped, failed)", ["sink", "outcome"], registry=r)


class MetricsMiddleware(Middleware):
    """Labelled children are looked up once per label set and cached: the hot path is a dict lookup.

    ``event_types`` names, per worker, the event types it consumes: on boot every label set the worker can
    produce for them is exported at 0, so a dashboard's ``increase()`` sees the very first event (a counter
    born at 1 has no earlier sample to increase from).
    """

    def __init__(self, metrics: Metrics, event_types: Mapping[str, Sequence[str]] | None = None) -> None:
        self.m = metrics
        self.event_types = {worker: tuple(types) for worker, types in (event_types or {}).items()}
        self._children: dict[tuple, object] = {}
        self._jobs: dict[tuple[str, str], tuple] = {}
        self._running: dict[str, dict[int, int]] = {}
        self._last_success: dict[tuple[str, str], float] = {}

    def _child(self, metric, *labels: str):
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def on_boot(self, worker: str) -> None:
        self._child(self.m.connected, worker).set(0)
        self._running_slots(worker)
        for event_type in self.event_types.get(worker, ()):
            self._job(worker, event_type)
            self._child(self.m.retries, worker, event_type)
            for outcome in OUTCOMES:
                self._child(self.m.consumed, worker, event_type, outcome)
            for reason in DEAD_LETTER_REASONS:
                self._child(self.m.dead_letters, worker, event_type, reason)
            if event_type != "job-failed":  # a dead letter publishes job-failed (never for a job-failed)
                self._child(self.m.published, worker, "job-failed")
        if self.event_types.get(worker):  # an undecodable message is rejected as event type "unknown"
            self._child(self.m.consumed, worker, "unknown", "rejected")

    def _running_slots(self, worker: str) -> dict[int, int]:
        running = self._running.get(worker)
        if running is None:  # sum() over the values runs in C, whole, while job threads write their own slot
            running = self._running[worker] = {}
            self._child(self.m.in_progress, worker).set_function(lambda: sum(running.values()))
        return running

    def on_connection(self, worker: str, connected: bool) -> None:
        self._child(self.m.connected, worker).set(1 if connected else 0)

    def _job(self, worker: str, event_type: str) -> tuple[dict, object]:
        """Per (worker, event type), resolved once: the running-jobs slots and the duration histogram.

        Every job runs these, so the two gauges cost nothing per job: jobs in progress is the sum of one slot
        per job thread (each thread writes only its own slot) and the last success a plain dict entry; both are
        read when Prometheus scrapes.
        """
        key = (worker, event_type)
        calls = self._jobs.get(key)
        if calls is None:
            calls = self._jobs[key] = (self._running_slots(worker),
                                       self._child(self.m.duration, worker, event_type).observe)
        return calls

    def before_job(self, worker: str, event_type: str) -> None:
        self._job(worker, event_type)[0][threading.get_ident()] = 1

    def after_job(self, worker: str, event_type: str, outcome: str, duration: float | None) -> None:
        running, observe = self._job(worker, event_type)
        if duration is not None:
            running[threading.get_ident()] = 0
            observe(duration)
        self._child(self.m.consumed, worker, event_type, outcome).inc()
        if outcome in FAILED_OUTCOMES:
            self._child(self.m.last_failure, worker, event_type, outcome).set(time.time())
        elif outcome == "ok":
            key = (worker, event_type)
            if key not in self._last_success:
                self._child(self.m.last_success, worker, event_type).set_function(
                    lambda: self._last_success[key])
            self._last_success[key] = time.time()

    def on_retry(self, worker: str, event_type: str, delay: float) -> None:
        self._child(self.m.retries, worker, event_type).inc()

    def on_dead_letter(self, worker: str, event_type: str, reason: str) -> None:
        self._child(self.m.dead_letters, worker, event_type, reason).inc()

    def on_published(self, worker: str, event_type: str) -> None:
        self._child(self.m.published, worker, event_type).inc()

    def on_progress(self, worker: str, kind: str, nbytes: int) -> None:
        self._child(self.m.bytes, worker, kind).inc(nbytes)
