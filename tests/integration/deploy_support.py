"""Shared constants and helpers of the deploy/ tests (tests/integration/test_deploy_*.py), not a test module.

deploy/ is valid and agrees with the code: Prometheus config and alert rules (promtool, incl. the rule unit
tests), docker-compose file, Kubernetes manifests, Grafana dashboard, rabbitmq.conf (static and on a real
throw-away RabbitMQ node), Dockerfile and its health check. Every built-in worker and the scheduler
(`appsvc-dr schedule`) are deployed in compose and Kubernetes, and their command lines parse with the real CLI.

Needs promtool (Debian `prometheus`), docker-compose, rabbitmq-server and PyYAML: a missing one skips its
test, except under CI=true, where it fails the run. kubectl (offline `kubectl kustomize` only) is optional:
it is not a Debian 12 package, so its test skips when it is absent, also under CI.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
K8S = DEPLOY / "k8s"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "appservice-dr.json"
WORKERS = ["db-backup", "fileshare", "functions", "secrets", "upload", "notifier", "catalog", "mirror"]
# Workers that must never run more than one replica: a plain Deployment with replicas 1, no KEDA.
SINGLE_REPLICA_WORKERS = {"catalog", "mirror"}
SCALED_WORKERS = [w for w in WORKERS if w not in SINGLE_REPLICA_WORKERS]
COMPONENTS = {"secrets", "databases", "fileshare"}
IN_CI = os.environ.get("CI") == "true"

# The metric names the workers and RabbitMQ's prometheus plugin export (the contract with the runtime).
WORKER_METRICS = {
    "appsvc_dr_events_consumed_total", "appsvc_dr_job_duration_seconds_bucket",
    "appsvc_dr_job_duration_seconds_sum", "appsvc_dr_job_duration_seconds_count", "appsvc_dr_jobs_in_progress",
    "appsvc_dr_retries_total", "appsvc_dr_last_success_timestamp_seconds", "appsvc_dr_bytes_processed_total",
    "appsvc_dr_broker_connected", "appsvc_dr_events_published_total", "appsvc_dr_notifications_total",
    "appsvc_dr_dead_letters_total", "appsvc_dr_secrets_newest_version_timestamp_seconds",
    "appsvc_dr_secrets_rotations_total", "appsvc_dr_last_failure_timestamp_seconds",
    "appsvc_dr_mirror_lag_seconds", "appsvc_dr_mirror_backlog", "appsvc_dr_store_free_bytes",
    "appsvc_dr_store_used_bytes", "appsvc_dr_store_next_set_bytes",
    # ops-lifecycle (issue 16): secrets rotation seen / handled (secrets worker), set lifecycle (catalog)
    "appsvc_dr_secrets_last_rotation_seen_timestamp_seconds", "appsvc_dr_secrets_last_rotation_handled_timestamp_seconds",
    "appsvc_dr_newest_complete_set_timestamp_seconds", "appsvc_dr_backup_sets", "appsvc_dr_backup_sets_unresolved",
    "appsvc_dr_set_duration_seconds", "appsvc_dr_set_deadline_timestamp_seconds", "appsvc_dr_rpo_objective_seconds",
    "appsvc_dr_database_log_backup_age_seconds", "appsvc_dr_database_log_warnings_total",
}
# Served by the scheduler (`appsvc-dr schedule`, workers.scheduler.metrics), scraped with worker="scheduler".
SCHEDULER_METRICS = {"appsvc_dr_schedule_next_slot_timestamp_seconds",
                     "appsvc_dr_schedule_last_published_slot_timestamp_seconds", "appsvc_dr_schedule_publishes_total"}
# Written by `appsvc-dr drill --textfile F` for node_exporter's textfile collector (not by the workers).
DRILL_METRICS = {"appsvc_dr_last_restore_drill_timestamp_seconds", "appsvc_dr_estimated_rto_seconds",
                 "appsvc_dr_last_secondary_restore_drill_timestamp_seconds", "appsvc_dr_secondary_estimated_rto_seconds"}
# Written by `appsvc-dr recover run|report --textfile F` (workers.recover.metrics).
RECOVER_METRICS = {"appsvc_dr_recovery_duration_seconds"}
KNOWN_METRICS = WORKER_METRICS | SCHEDULER_METRICS | DRILL_METRICS | RECOVER_METRICS | {"rabbitmq_queue_messages_ready"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or",
                "unless", "inf", "nan"}


# ---- helpers ----------------------------------------------------------------------------------------------

def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} (CI=true: a missing tool fails the run instead of skipping)")
    pytest.skip(f"{what}; skipped outside CI (under CI=true this test fails)")


def require_tool(name: str, *, optional: bool = False) -> str:
    path = shutil.which(name)
    if path is None:
        if optional:
            pytest.skip(f"{name} is not installed / not on PATH (optional tool, skipped also under CI)")
        _missing(f"{name} is not installed / not on PATH")
    return path


def run(cmd: list[str], *, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    assert result.returncode == 0, f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (good enough for our rules and panels, not a full parser)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # string literals
    e = re.sub(r"\{[^}]*\}", "", e)                                             # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                                            # ranges, subqueries
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)  # label lists
    e = re.sub(r"\$\{?\w+\}?", "", e)                                           # Grafana variables
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", e):
        if e[m.end():].lstrip().startswith("(") or m.group(0).lower() in PROMQL_WORDS:
            continue  # a function call or a keyword
        names.add(m.group(0))
    return names


def load_alert_rules(yaml) -> list[dict]:
    groups = yaml.safe_load((PROM / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def load_settings_in_subprocess(env: dict[str, str]) -> subprocess.CompletedProcess:
    """workers.config.load_settings() with exactly ``env`` (plus PATH), in a fresh interpreter."""
    clean = {k: str(v) for k, v in env.items()}
    clean["PATH"] = os.environ.get("PATH", "")
    code = ("from workers.config import load_settings; s = load_settings(); "
            "print(s.store.kind, s.metrics.host, s.metrics.port, s.worker.grace_period)")
    return subprocess.run([sys.executable, "-c", code], env=clean, cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_cli(argv: list[str]):
    """``argv`` parsed by the real `appsvc-dr` argument parser (SystemExit on a bad command line)."""
    from workers.cli import build_parser
    return build_parser().parse_args(argv)


def check_schedule_args(argv: list[str], env: dict[str, str]) -> list[str]:
    """``argv`` with exactly ``env`` (plus PATH) is a valid long-running `appsvc-dr schedule` whose schedules
    come from cron settings (APPSVC_DR_SCHEDULE__CRON) and name known components; returns the schedules'
    names, e.g. ``["secrets+databases+fileshare"]``."""
    from workers.cli.schedule_cmd import schedule
    args = parse_cli(argv)
    assert args.func is schedule, argv
    assert not args.once, "--once would exit after one slot and be restarted forever"
    assert args.every is None and args.cron is None, "deploy files configure the schedule by APPSVC_DR_SCHEDULE__*"
    assert env.get("APPSVC_DR_SCHEDULE__CRON"), "no APPSVC_DR_SCHEDULE__CRON"
    clean = {k: str(v) for k, v in env.items()}
    clean["PATH"] = os.environ.get("PATH", "")
    code = ("import sys, json; from workers.cli import build_parser; from workers.config import load_settings; "
            "from workers.cli.schedule_cmd import schedules_from; from workers.scheduler.run import scheduled_event; "
            "from workers.scheduler.triggers import CronTrigger; "
            "found = schedules_from(build_parser().parse_args(json.loads(sys.argv[1])), load_settings()); "
            "[scheduled_event('stamp1', s.components) for s in found]; "
            "assert all(isinstance(t, CronTrigger) for s in found for t in s.triggers); "
            "print(json.dumps([s.name for s in found]))")
    result = subprocess.run([sys.executable, "-c", code, json.dumps(argv)], env=clean, cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    names = json.loads(result.stdout)
    assert names and all(set(n.split("+")) <= COMPONENTS for n in names), names
    return names


def seconds(duration: str) -> float:
    """docker-compose durations such as 1h, 31m, 90s, 1m30s."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(duration))
    assert parts, f"cannot parse duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)
