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


def test_every_label_set_a_worker_can_produce_is_exported_at_zero_on_boot():
    # Given a worker consuming backup-due and job-failed
    metrics = Metrics()
    hooks = Hooks([MetricsMiddleware(metrics, {"w": ["backup-due", "job-failed"]})])
    # When it boots, before any job ran
    hooks.on_boot("w")
    # Then every outcome, retry and dead-letter reason of each consumed type is exported at 0
    for event_type in ("backup-due", "job-failed"):
        for outcome in ("ok", "retried", "dead_lettered", "rejected"):
            assert sample(metrics, "appsvc_dr_events_consumed_total", worker="w", event_type=event_type,
                          outcome=outcome) == 0
        assert sample(metrics, "appsvc_dr_retries_total", worker="w", event_type=event_type) == 0
        assert sample(metrics, "appsvc_dr_dead_letters_total", worker="w", event_type=event_type,
                      reason="retries-exhausted") == 0
        assert sample(metrics, "appsvc_dr_job_duration_seconds_count", worker="w", event_type=event_type) == 0
    assert sample(metrics, "appsvc_dr_events_published_total", worker="w", event_type="job-failed") == 0
    assert sample(metrics, "appsvc_dr_events_consumed_total", worker="w", event_type="unknown",
                  outcome="rejected") == 0
    # And another worker's label sets are not invented
    assert sample(metrics, "appsvc_dr_retries_total", worker="other", event_type="backup-due") is None


def test_a_dead_letter_stamps_the_last_failure_time(monkeypatch):
    # Given a booted worker
    metrics = Metrics()
    hooks = Hooks([MetricsMiddleware(metrics, {"w": ["backup-due"]})])
    hooks.on_boot("w")
    monkeypatch.setattr("workers.middleware.metrics.time.time", lambda: 1_800_000_000.0)
    # When a job is dead-lettered and another succeeds
    hooks.after_job("w", "backup-due", "dead_lettered", 0.1)
    hooks.after_job("w", "backup-due", "ok", 0.1)
    # Then the dead letter's time is exported (for alerts that need no Prometheus history), not the success's
    assert sample(metrics, "appsvc_dr_last_failure_timestamp_seconds", worker="w", event_type="backup-due",
                  outcome="dead_lettered") == 1_800_000_000.0
    assert sample(metrics, "appsvc_dr_last_failure_timestamp_seconds", worker="w", event_type="backup-due",
                  outcome="ok") is None
