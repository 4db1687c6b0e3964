"""The per-job metrics: jobs in progress and the last success are read at scrape time, per worker and type."""
from __future__ import annotations

import threading

from workers.middleware.base import Hooks
from workers.middleware.metrics import Metrics, MetricsMiddleware


def sample(metrics: Metrics, name: str, **labels) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_jobs_in_progress_counts_each_job_thread_while_its_job_runs():
    metrics = Metrics()
    hooks = Hooks([MetricsMiddleware(metrics)])
    hooks.on_boot("w")
    assert sample(metrics, "appsvc_dr_jobs_in_progress", worker="w") == 0
    inside, release = threading.Barrier(3), threading.Event()

    def job() -> None:
        hooks.before_job("w", "backup-due")
        inside.wait()
        release.wait()
        hooks.after_job("w", "backup-due", "ok", 0.2)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()
    assert sample(metrics, "appsvc_dr_jobs_in_progress", worker="w") == 2
    release.set()
    for t in threads:
        t.join()
    assert sample(metrics, "appsvc_dr_jobs_in_progress", worker="w") == 0
    assert sample(metrics, "appsvc_dr_events_consumed_total", worker="w", event_type="backup-due", outcome="ok") == 2
    assert sample(metrics, "appsvc_dr_job_duration_seconds_count", worker="w", event_type="backup-due") == 2


def test_last_success_appears_with_the_first_success_and_follows_the_latest(monkeypatch):
    metrics = Metrics()
    hooks = Hooks([MetricsMiddleware(metrics)])
    hooks.before_job("w", "secrets-rotated")
    hooks.after_job("w", "secrets-rotated", "retried", 1.0)
    assert sample(metrics, "appsvc_dr_last_success_timestamp_seconds", worker="w", event_type="secrets-rotated") is None
    for now in (1000.0, 2000.0):
        monkeypatch.setattr("workers.middleware.metrics.time.time", lambda now=now: now)
        hooks.before_job("w", "secrets-rotated")
        hooks.after_job("w", "secrets-rotated", "ok", 1.0)
        assert sample(metrics, "appsvc_dr_last_success_timestamp_seconds", worker="w",
                      event_type="secrets-rotated") == now
    # a rejected message never started a job: nothing is counted as running
    hooks.after_job("w", "secrets-rotated", "rejected", None)
    assert sample(metrics, "appsvc_dr_jobs_in_progress", worker="w") == 0
