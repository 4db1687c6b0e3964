"""deploy/ monitoring: Prometheus config and alert rules (promtool, incl. the rule unit tests), the Grafana
dashboard and provisioning, and the metrics contract with the runtime.

Tools and the CI rule (a missing tool skips, except under CI=true, where it fails; kubectl is optional):
see tests/integration/deploy_support.py.
"""
from __future__ import annotations

import json
import re

import pytest

from tests.integration.deploy_support import (DASHBOARD, DEPLOY, KNOWN_METRICS, PROM, WORKERS, dashboard_exprs,
                                              load_alert_rules, metric_names, require_tool, run)

pytestmark = pytest.mark.integration


# ---- Prometheus -------------------------------------------------------------------------------------------

def test_prometheus_config_is_valid():
    # Given the Prometheus config and the rule file it loads
    promtool = require_tool("promtool")
    # When promtool checks it
    result = run([promtool, "check", "config", str(PROM / "prometheus.yml")])
    # Then the config and its rule file are valid
    assert "SUCCESS" in result.stdout


def test_prometheus_scrapes_every_worker_and_the_scheduler(yaml):
    # Given the compose Prometheus config
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}

    def targets(job: dict) -> dict:
        return {t: sc.get("labels", {}) for sc in job["static_configs"] for t in sc["targets"]}
    # When the static targets of its jobs are listed
    # Then every worker is scraped on :9464 with its `worker` label, keeping the workers' own labels
    assert targets(jobs["appsvc-dr"]) == {f"{w}:9464": {"worker": w} for w in WORKERS}
    assert jobs["appsvc-dr"].get("honor_labels") is True
    # And the scheduler on :9464 in a job of its own, labelled worker="scheduler" as the Kubernetes pod label
    # appsvc-dr/worker: scheduler labels it (AppsvcDrSchedulerStuck selects on that)
    assert targets(jobs["scheduler"]) == {"scheduler:9464": {"worker": "scheduler"}}
    assert jobs["scheduler"].get("honor_labels") is True
    assert "appsvc-dr/worker: scheduler" in (DEPLOY / "k8s" / "scheduler.yaml").read_text()


def test_alert_rules_are_valid():
    # Given the alert rules
    promtool = require_tool("promtool")
    # When promtool checks them
    result = run([promtool, "check", "rules", str(PROM / "alerts.yml")])
    # Then every rule parses
    assert "SUCCESS" in result.stdout


def test_alert_rule_unit_tests_pass():
    # Given promtool unit tests for every alert (firing and not firing)
    promtool = require_tool("promtool")
    # When promtool runs them
    result = run([promtool, "test", "rules", str(PROM / "alerts_test.yml")])
    # Then they all pass
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_not_firing(yaml):
    # Given the alert rules and the promtool unit tests
    alerts = {rule["alert"] for rule in load_alert_rules(yaml)}
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    # When the cases are grouped by alert and expectation
    firing = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    # Then each alert has at least one firing and one not-firing case
    assert alerts - firing == set(), f"never tested firing: {alerts - firing}"
    assert alerts - quiet == set(), f"never tested not firing: {alerts - quiet}"
    expected = {"AppsvcDrJobDeadLettered", "AppsvcDrDeadLetterQueueNotEmpty", "AppsvcDrNoRecentSuccess",
                "AppsvcDrBrokerDisconnected", "AppsvcDrWorkerDown", "AppsvcDrRetryStorm",
                "AppsvcDrNotificationsFailing"}
    assert expected <= alerts


def test_every_alert_says_what_failed_and_how_to_fix_it(yaml):
    # Given the alert rules and the runbook in deploy/README.md
    readme_anchors = {h.strip().lower() for h in re.findall(r"^### (\S+)\s*$",
                                                            (DEPLOY / "README.md").read_text(), re.M)}
    for rule in load_alert_rules(yaml):
        annotations = rule.get("annotations", {})
        # When its annotations are read
        # Then it has a summary, a description with a fix, a severity, and a runbook entry that exists
        assert {"summary", "description", "runbook"} <= annotations.keys(), rule["alert"]
        assert "Fix:" in annotations["description"], f"{rule['alert']}: description must say how to fix it"
        assert rule.get("labels", {}).get("severity") in {"warning", "critical"}, rule["alert"]
        anchor = re.search(r"#([a-z0-9-]+)", annotations["runbook"])
        assert anchor and anchor.group(1) == rule["alert"].lower(), rule["alert"]
        assert anchor.group(1) in readme_anchors, f"deploy/README.md has no '### {rule['alert']}' section"
    # And dead-letter alerts point at the dlq commands
    dead_letter = {r["alert"]: r["annotations"]["description"] for r in load_alert_rules(yaml)
                   if "DeadLetter" in r["alert"]}
    for name, description in dead_letter.items():
        assert "appsvc-dr dlq show" in description and "appsvc-dr dlq replay" in description, name


def test_alerts_use_only_known_metrics(yaml):
    # Given every alert expression
    for rule in load_alert_rules(yaml):
        # When its metric names are extracted
        used = metric_names(rule["expr"])
        # Then they are the runtime's / RabbitMQ's metrics (or Prometheus' own `up`)
        assert used, rule["alert"]
        assert used <= KNOWN_METRICS | {"up"}, f"{rule['alert']} uses unknown metrics {used - KNOWN_METRICS}"


def test_runtime_exports_the_metrics_deploy_relies_on(yaml, tmp_path):
    # Given the metric names used by alerts and the dashboard
    used = set().union(*(metric_names(r["expr"]) for r in load_alert_rules(yaml)),
                       *(metric_names(e) for e in dashboard_exprs()))
    # When the workers' metrics registry is built
    from workers.catalog.rpo import SetMetrics
    from workers.middleware.metrics import Metrics
    exported = set()
    metrics = Metrics()
    SetMetrics(metrics.registry, 3600.0)      # the catalog's recovery-point gauges, on the same registry
    from workers.scheduler.metrics import ScheduleMetrics
    ScheduleMetrics("stamp1", metrics.registry)   # the scheduler's, on its own registry in the scheduler
    for family in metrics.registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        exported |= {family.name + s for s in suffixes}
    # And the restore drill's textfiles (workers.drill.results), of the primary and of a secondary copy, add theirs
    from workers.drill.results import write_textfile
    for name, copy in (("drill.prom", None), ("drill-secondary.prom", "dr-site")):
        write_textfile(str(tmp_path / name), {("stamp1", "passed"): 1.0}, {"stamp1": 60.0}, copy)
        exported |= set(re.findall(r"^(appsvc_dr_\w+)\{", (tmp_path / name).read_text(), re.M))
    # Then every appsvc_dr_* metric deploy/ uses is exported by the runtime
    missing = {m for m in used if m.startswith("appsvc_dr_")} - exported
    assert not missing, f"deploy/ uses metrics the runtime does not export: {sorted(missing)}"


# ---- Grafana ---------------------------------------------------------------------------------------------

def test_dashboard_is_valid_json_using_only_known_metrics():
    # Given the provisioned dashboard
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = dashboard_exprs()
    # When its queries (and template variable queries) are inspected
    used = set().union(*(metric_names(e) for e in exprs))
    for var in dashboard["templating"]["list"]:
        query = var.get("query")
        query = query.get("query", "") if isinstance(query, dict) else ""
        used |= set(re.findall(r"label_values\(\s*([A-Za-z_:][\w:]*)", query))
    # Then only known metric names (or Prometheus' own `up`) are referenced, and the key signals all have panels
    assert used <= KNOWN_METRICS | {"up"}, f"unknown metrics: {used - KNOWN_METRICS}"
    required = {"appsvc_dr_events_consumed_total", "appsvc_dr_job_duration_seconds_bucket",
                "appsvc_dr_jobs_in_progress", "appsvc_dr_last_success_timestamp_seconds",
                "appsvc_dr_bytes_processed_total", "rabbitmq_queue_messages_ready", "appsvc_dr_broker_connected",
                "up"}
    assert required <= used, f"no panel for {required - used}"
    assert any("dlq" in e for e in exprs), "no dead-letter-queue panel"
    assert dashboard["uid"] and all(p.get("datasource") for p in dashboard["panels"] if p["type"] != "row")


def test_dashboard_queries_are_valid_promql(tmp_path, yaml):
    # Given the dashboard queries with Grafana's variables replaced by sample values
    promtool = require_tool("promtool")
    substitutions = {"$__rate_interval": "5m", "$window": "1h", "$worker": ".*"}
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        for var, value in substitutions.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    rule_file = tmp_path / "dashboard_rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    # When promtool parses them as recording rules
    result = run([promtool, "check", "rules", str(rule_file)])
    # Then every query is valid PromQL
    assert f"{len(rules)} rules found" in result.stdout


def test_grafana_provisioning_points_at_the_dashboards(yaml):
    # Given the Grafana provisioning files
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/appservice-dr.yaml").read_text())
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    # When they are compared with the compose mounts
    mounts = compose["services"]["grafana"]["volumes"]
    # Then the datasource is Prometheus and the provider reads the mounted dashboards directory
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    path = providers["providers"][0]["options"]["path"]
    assert f"./grafana/dashboards:{path}:ro" in mounts
