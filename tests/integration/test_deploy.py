"""deploy/ is valid and agrees with the code: Prometheus config and alert rules (promtool, incl. the rule unit
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
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
K8S = DEPLOY / "k8s"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "appservice-dr.json"
WORKERS = ["db-backup", "fileshare", "secrets", "upload", "notifier", "catalog"]
# Workers that must never run more than one replica: a plain Deployment with replicas 1, no KEDA.
SINGLE_REPLICA_WORKERS = {"catalog"}
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
    "appsvc_dr_secrets_rotations_total",
}
# Written by `appsvc-dr drill --textfile F` for node_exporter's textfile collector (not by the workers).
DRILL_METRICS = {"appsvc_dr_last_restore_drill_timestamp_seconds"}
KNOWN_METRICS = WORKER_METRICS | DRILL_METRICS | {"rabbitmq_queue_messages_ready"}
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


@pytest.fixture(scope="module")
def yaml():
    try:
        import yaml as pyyaml
    except ImportError:
        _missing("PyYAML is not installed (it is a test dependency of tests/integration/test_deploy.py)")
    return pyyaml


def run(cmd: list[str], *, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
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
    """workers.runtime.config.load_settings() with exactly ``env`` (plus PATH), in a fresh interpreter."""
    clean = {k: str(v) for k, v in env.items()}
    clean["PATH"] = os.environ.get("PATH", "")
    code = ("from workers.runtime.config import load_settings; s = load_settings(); "
            "print(s.store.kind, s.metrics.host, s.metrics.port, s.worker.grace_period)")
    return subprocess.run([sys.executable, "-c", code], env=clean, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_cli(argv: list[str]):
    """``argv`` parsed by the real `appsvc-dr` argument parser (SystemExit on a bad command line)."""
    from workers.cli import build_parser
    return build_parser().parse_args(argv)


def check_schedule_args(argv: list[str]) -> None:
    """``argv`` is a valid `appsvc-dr schedule` command line with a positive interval and known components."""
    from workers.cli.schedule_cmd import schedule
    from workers.runtime.config import parse_duration
    from workers.scheduler import scheduled_event
    args = parse_cli(argv)
    assert args.func is schedule, argv
    assert parse_duration(args.every).total_seconds() > 0
    assert args.at is not None, "align the slots with --at (stable times across restarts)"
    assert not args.once, "--once would exit after one slot and be restarted forever"
    components = tuple(c.strip() for c in args.components.split(",") if c.strip())
    assert components and set(components) <= COMPONENTS, components
    scheduled_event("stamp1", components)  # the event validates (contracts) with these components


def seconds(duration: str) -> float:
    """docker-compose durations such as 1h, 31m, 90s, 1m30s."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(duration))
    assert parts, f"cannot parse duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


# ---- Prometheus -------------------------------------------------------------------------------------------

def test_prometheus_config_is_valid():
    # Given the Prometheus config and the rule file it loads
    promtool = require_tool("promtool")
    # When promtool checks it
    result = run([promtool, "check", "config", str(PROM / "prometheus.yml")])
    # Then the config and its rule file are valid
    assert "SUCCESS" in result.stdout


def test_prometheus_scrapes_every_worker_but_not_the_scheduler(yaml):
    # Given the compose Prometheus config
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "appsvc-dr")
    # When its static targets are listed
    targets = {t: sc.get("labels", {}) for sc in job["static_configs"] for t in sc["targets"]}
    # Then every worker is scraped on :9464 with its `worker` label, and the scheduler (no status server) is not
    assert targets == {f"{w}:9464": {"worker": w} for w in WORKERS}
    assert job.get("honor_labels") is True


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
    from workers.middleware.metrics import Metrics
    exported = set()
    for family in Metrics().registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        exported |= {family.name + s for s in suffixes}
    # And the restore drill's textfile (workers.drill.results) adds its own
    from workers.drill.results import write_textfile
    write_textfile(str(tmp_path / "drill.prom"), {("stamp1", "passed"): 1.0})
    exported |= set(re.findall(r"^(appsvc_dr_\w+)\{", (tmp_path / "drill.prom").read_text(), re.M))
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
    # Then only known metric names are referenced, and the key signals all have panels
    assert used <= KNOWN_METRICS, f"unknown metrics: {used - KNOWN_METRICS}"
    required = {"appsvc_dr_events_consumed_total", "appsvc_dr_job_duration_seconds_bucket",
                "appsvc_dr_jobs_in_progress", "appsvc_dr_last_success_timestamp_seconds",
                "appsvc_dr_bytes_processed_total", "rabbitmq_queue_messages_ready", "appsvc_dr_broker_connected"}
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


# ---- docker-compose --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose_config(yaml):
    docker_compose = require_tool("docker-compose")
    result = run([docker_compose, "-f", str(DEPLOY / "compose.yaml"), "config"], cwd=ROOT)
    return yaml.safe_load(result.stdout)


def test_compose_file_is_valid():
    # Given the compose file
    docker_compose = require_tool("docker-compose")
    # When docker-compose validates it
    result = run([docker_compose, "-f", str(DEPLOY / "compose.yaml"), "config", "-q"], cwd=ROOT)
    # Then it is valid
    assert result.stderr.strip() == ""


def test_compose_runs_one_service_per_worker_plus_infrastructure(compose_config):
    # Given the resolved compose configuration
    services = compose_config["services"]
    # When its services are listed
    # Then there is the infrastructure and one service per worker, each running `appsvc-dr worker <name>`
    assert {"rabbitmq", "minio", "minio-init", "prometheus", "grafana"} <= services.keys()
    for name in WORKERS:
        service = services[name]
        assert service["command"] == ["worker", name]
        env = service["environment"]
        assert env["APPSVC_DR_BROKER__HOST"] == "rabbitmq"
        assert env["APPSVC_DR_METRICS__HOST"] == "0.0.0.0"
        assert env["APPSVC_DR_STORE__KIND"] == "s3" and env["APPSVC_DR_STORE__S3_ENDPOINT"] == "minio:9000"
        # And docker waits longer than the worker's own grace period before killing it
        grace = float(env.get("APPSVC_DR_WORKER__GRACE_PERIOD", 60))
        assert seconds(service["stop_grace_period"]) > grace, name
    assert services["rabbitmq"]["image"].startswith("rabbitmq:3.13-management")


def test_deploy_covers_every_built_in_worker():
    # Given the runtime's built-in workers
    from workers.app import BUILTIN, BUILTIN_BINDINGS
    # When compared with the workers deploy/ runs
    # Then each one is deployed (and nothing else), and `appsvc-dr worker <name>` parses for each
    assert set(WORKERS) == set(BUILTIN) == set(BUILTIN_BINDINGS)
    for name in WORKERS:
        assert parse_cli(["worker", name]).name == name


def test_compose_runs_one_scheduler_without_metrics_or_http_healthcheck(compose_config):
    # Given the resolved compose configuration
    scheduler = compose_config["services"]["scheduler"]
    # When the scheduler service is inspected
    # Then it runs a valid `appsvc-dr schedule ...` against the compose broker, as a single container
    check_schedule_args(scheduler["command"])
    env = scheduler["environment"]
    assert env["APPSVC_DR_BROKER__HOST"] == "rabbitmq" and env["APPSVC_DR_STAMP"]
    assert "scale" not in scheduler and scheduler.get("deploy", {}).get("replicas", 1) == 1
    # And it has no status server: no metrics port and the image's /healthz HEALTHCHECK is switched off
    assert "expose" not in scheduler and "ports" not in scheduler
    assert scheduler["healthcheck"].get("disable") is True or scheduler["healthcheck"].get("test") == ["NONE"]
    assert scheduler["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    # And its environment is valid configuration
    result = load_settings_in_subprocess(env)
    assert result.returncode == 0, result.stderr[-2000:]


def test_compose_catalog_is_a_single_container_with_retention_settings(compose_config):
    # Given the resolved compose configuration
    catalog = compose_config["services"]["catalog"]
    env = catalog["environment"]
    # When the catalog service is inspected
    # Then it is not scaled out and carries the retention settings it applies
    assert "scale" not in catalog and catalog.get("deploy", {}).get("replicas", 1) == 1
    assert int(env["APPSVC_DR_RETENTION__KEEP_LAST"]) >= 1
    assert env["APPSVC_DR_RETENTION__AUTO"] in {"true", "false"}
    assert "APPSVC_DR_ENCRYPTION__CERTIFICATE" not in env  # store access only


def test_compose_db_backup_and_upload_share_the_staging_directory(compose_config):
    # Given db-backup (stages database backups) and upload (reads them from the path in the event)
    services = compose_config["services"]
    top_volumes = compose_config.get("volumes", {})

    def staging(name: str) -> tuple[str, str, str]:
        env = services[name]["environment"]
        directory = env["APPSVC_DR_STAGING__DATABASE_DIR"]
        for volume in services[name].get("volumes", []):
            source, target = (volume.split(":")[:2] if isinstance(volume, str)
                              else (volume.get("source"), volume.get("target")))
            if directory == target or directory.startswith(target.rstrip("/") + "/"):
                return directory, source, target
        raise AssertionError(f"{name}: APPSVC_DR_STAGING__DATABASE_DIR={directory} is not on a mounted volume")

    # When their staging directory and the volume holding it are resolved
    db_backup, upload = staging("db-backup"), staging("upload")
    # Then it is the same directory on the same named volume, mounted at the same place
    assert db_backup == upload
    assert db_backup[1] in top_volumes, f"{db_backup[1]} must be a named volume"
    # And the mount point is the image's working directory (owned by the worker user, so a fresh named
    # volume is writable by uid 10001; a new directory elsewhere would be created as root)
    assert db_backup[2] == "/var/lib/appsvc-dr"
    assert re.search(r"^WORKDIR /var/lib/appsvc-dr$", (DEPLOY / "Dockerfile").read_text(), re.M)


def test_compose_file_hard_codes_no_credentials(yaml):
    # Given the raw compose file (before env files are merged in) and the dev env files
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    secretish = re.compile(r"PASS|SECRET|TOKEN|ACCESS_KEY|_KEY$|URLS$")
    # When environment entries that look like credentials are collected
    envs = [compose.get("x-worker-env", {})]
    envs += [s.get("environment", {}) for s in compose["services"].values()]
    hard_coded = [k for env in envs if isinstance(env, dict) for k in env if secretish.search(k)]
    # Then none is written in compose.yaml itself; they come from env files...
    assert hard_coded == []
    # ...and the committed (dev) env files say DEV ONLY and use obviously-dev values
    for env_file in sorted((DEPLOY / "env" / "dev").glob("*.env")):
        text = env_file.read_text()
        assert "DEV ONLY" in text, env_file
        for key, value in re.findall(r"^(\w+)=(.*)$", text, re.M):
            if re.search(r"PASS|SECRET_KEY", key):
                assert value.startswith("dev-only-"), f"{env_file.name}: {key} must be an obvious dev value"


def test_compose_worker_environment_is_accepted_by_the_settings(compose_config):
    # Given each worker's resolved environment from docker-compose
    for name in WORKERS:
        env = compose_config["services"][name]["environment"]
        # When the runtime loads its settings from exactly that environment
        result = load_settings_in_subprocess(env)
        # Then it is valid configuration (no unknown or malformed APPSVC_DR_ variables)
        assert result.returncode == 0, f"{name}: {result.stderr[-2000:]}"
        assert result.stdout.split()[:3] == ["s3", "0.0.0.0", "9464"], result.stdout


# ---- Kubernetes ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def k8s_docs(yaml) -> dict[str, list[dict]]:
    return {str(path.relative_to(K8S)): [d for d in yaml.safe_load_all(path.read_text()) if d]
            for path in sorted(K8S.rglob("*.yaml"))}


def test_k8s_manifests_parse_and_are_all_in_the_kustomization(k8s_docs):
    # Given every YAML file under deploy/k8s
    kustomization = k8s_docs["kustomization.yaml"][0]
    # When compared with the kustomization's resources
    listed = set(kustomization["resources"])
    # Then every manifest except the secret template is listed (and the template is not: it must never
    # overwrite real secrets), and every document has apiVersion, kind and metadata.name
    assert listed == set(k8s_docs) - {"kustomization.yaml", "secret.template.yaml"}
    for path, docs in k8s_docs.items():
        assert docs, f"{path} is empty"
        for doc in docs:
            if doc["kind"] != "Kustomization":
                assert doc.get("apiVersion") and doc["metadata"].get("name"), path


def k8s_objects(k8s_docs) -> list[dict]:
    return [d for path, ds in k8s_docs.items() if path != "secret.template.yaml" for d in ds]


def test_k8s_workers_have_probes_grace_periods_and_keda_scaling(k8s_docs):
    # Given the documents of the kustomization
    docs = k8s_objects(k8s_docs)
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs if d["kind"] == "ScaledObject"}
    trigger_auths = {d["metadata"]["name"] for d in docs if d["kind"] == "TriggerAuthentication"}
    for name in WORKERS:
        # When a worker's Deployment (and ScaledObject) are inspected
        deployment = deployments[f"appsvc-dr-{name}"]
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        # Then it runs `appsvc-dr worker <name>` with probes on /healthz and /readyz at port 9464
        assert container["args"] == ["worker", name]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == 9464
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        # And Prometheus finds it by its worker label
        assert deployment["spec"]["template"]["metadata"]["labels"]["appsvc-dr/worker"] == name
        # And Kubernetes waits longer than the worker's grace period before SIGKILL
        assert pod["terminationGracePeriodSeconds"] > float(env["APPSVC_DR_WORKER__GRACE_PERIOD"])
        assert pod["securityContext"]["runAsNonRoot"] is True
        if name in SINGLE_REPLICA_WORKERS:
            # And a single-writer worker runs exactly one pod, also during a rollout, and KEDA never scales it
            assert deployment["spec"]["replicas"] == 1, name
            assert deployment["spec"]["strategy"]["type"] == "Recreate", name
            assert name not in {s.removeprefix("appsvc-dr-") for s in scaled}, name
            continue
        assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
        # And KEDA scales it on its RabbitMQ queue length
        trigger = scaled[f"appsvc-dr-{name}"]["spec"]["triggers"][0]
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["queueName"] == f"appsvc-dr.{name}"
        assert trigger["metadata"]["mode"] == "QueueLength"
        assert trigger["authenticationRef"]["name"] in trigger_auths
    assert set(scaled) == {f"appsvc-dr-{w}" for w in SCALED_WORKERS}
    assert deployments["appsvc-dr-db-backup"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 3600


def test_k8s_catalog_applies_retention(k8s_docs):
    # Given the catalog Deployment
    deployment = next(d for d in k8s_docs["workers/catalog.yaml"] if d["kind"] == "Deployment")
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    # When its settings are read
    # Then retention is configured where it is applied, and no certificate is needed
    assert int(env["APPSVC_DR_RETENTION__KEEP_LAST"]) >= 1 and env["APPSVC_DR_RETENTION__AUTO"] == "true"
    assert not any(k.startswith("APPSVC_DR_ENCRYPTION__") for k in env)


def test_k8s_scheduler_is_one_producer_pod_without_probes(k8s_docs):
    # Given the scheduler Deployment, the ConfigMap and the Secret template
    deployment = next(d for d in k8s_docs["scheduler.yaml"] if d["kind"] == "Deployment")
    spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    config = k8s_docs["configmap.yaml"][0]["data"]
    secret_keys = k8s_docs["secret.template.yaml"][0]["stringData"].keys()
    # When it is inspected
    # Then it runs a valid `appsvc-dr schedule ...`, exactly once per site, also during a rollout
    check_schedule_args(container["args"])
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    assert deployment["metadata"]["name"] not in {d["spec"]["scaleTargetRef"]["name"] for d in k8s_objects(k8s_docs)
                                                  if d["kind"] == "ScaledObject"}
    # And it has no status server: no ports, no HTTP probes, nothing for Prometheus to scrape
    assert not container.get("ports")
    assert not {"livenessProbe", "readinessProbe", "startupProbe"} & container.keys()
    assert "appsvc-dr/worker" not in spec["template"]["metadata"]["labels"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    # And it gets the stamp and broker from the ConfigMap and only the broker login from the Secret
    assert [e["configMapRef"]["name"] for e in container["envFrom"]] == ["appsvc-dr-config"]
    env = {}
    for item in container["env"]:
        ref = item["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "appsvc-dr-secrets" and ref["key"] in secret_keys, item
        env[item["name"]] = "sample"
    assert set(env) == {"APPSVC_DR_BROKER__USERNAME", "APPSVC_DR_BROKER__PASSWORD"}
    assert config["APPSVC_DR_STAMP"] and config["APPSVC_DR_BROKER__HOST"]
    result = load_settings_in_subprocess({**config, **env})
    assert result.returncode == 0, result.stderr[-2000:]


def test_k8s_db_backup_and_upload_mount_the_staging_directory(k8s_docs):
    # Given the staging directory from the ConfigMap and the db-backup / upload Deployments
    directory = k8s_docs["configmap.yaml"][0]["data"]["APPSVC_DR_STAGING__DATABASE_DIR"]
    assert directory.startswith("/"), "a local staging directory (or a UNC path, then drop this test's mounts)"
    volumes = {}
    for name in ("db-backup", "upload"):
        deployment = next(d for d in k8s_docs[f"workers/{name}.yaml"] if d["kind"] == "Deployment")
        pod = deployment["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        # When the volume mounted at the staging directory is looked up
        # Then both mount a volume named "staging" exactly there (the read-only root filesystem would
        # refuse the default /var/tmp/... path)
        assert mounts.get(directory) == "staging", f"{name}: nothing mounted at {directory}"
        assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
        volumes[name] = next(v for v in pod["volumes"] if v["name"] == "staging")
    # And it is the same kind of volume in both (an RWX claim must be shared by both; see deploy/README.md)
    assert volumes["db-backup"] == volumes["upload"]
    readme = (DEPLOY / "README.md").read_text()
    assert "ReadWriteMany" in readme and "APPSVC_DR_STAGING__SMB_USERNAME" in readme


def test_k8s_secret_template_holds_placeholders_only(k8s_docs):
    # Given the Secret template
    for secret in k8s_docs["secret.template.yaml"]:
        # When its values are read
        for key, value in secret.get("stringData", {}).items():
            # Then each is a placeholder, an empty list, or a URL without credentials
            ok = value == "REPLACE_ME" or value == "[]" or (value.startswith("http") and "@" not in value)
            assert ok, f"{secret['metadata']['name']}.{key} looks like a real value: {value!r}"
        assert "data" not in secret


def test_k8s_worker_environment_is_accepted_by_the_settings(k8s_docs):
    # Given the ConfigMap, the secret template's keys with sample values, and a worker's own env
    config = k8s_docs["configmap.yaml"][0]["data"]
    secret = {k: ("[]" if k.endswith("URLS") else "sample") for k in k8s_docs["secret.template.yaml"][0]["stringData"]}
    for path in (f"workers/{name}.yaml" for name in WORKERS):
        deployment = next(d for d in k8s_docs[path] if d["kind"] == "Deployment")
        own = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        # When the runtime loads its settings from that environment
        result = load_settings_in_subprocess({**config, **secret, **own})
        # Then it is valid configuration
        assert result.returncode == 0, f"{path}: {result.stderr[-2000:]}"


def test_kustomization_builds():
    # Given kubectl's built-in kustomize (works offline)
    kubectl = require_tool("kubectl", optional=True)
    # When the kustomization is built
    result = run([kubectl, "kustomize", str(K8S)])
    # Then it renders every object: namespace, configmap, trigger auth, one Deployment per worker plus the
    # scheduler's, and a ScaledObject per KEDA-scaled worker
    kinds = re.findall(r"^kind: (\w+)", result.stdout, re.M)
    assert sorted(kinds) == sorted(["Namespace", "ConfigMap", "TriggerAuthentication"]
                                   + ["Deployment"] * (len(WORKERS) + 1) + ["ScaledObject"] * len(SCALED_WORKERS))


# ---- RabbitMQ --------------------------------------------------------------------------------------------

def rabbitmq_settings() -> dict[str, str]:
    text = (DEPLOY / "rabbitmq" / "rabbitmq.conf").read_text()
    return dict(re.findall(r"^\s*([\w.]+)\s*=\s*(\S+)\s*$", text, re.M))


def test_rabbitmq_conf_allows_hours_long_jobs():
    # Given rabbitmq.conf
    settings = rabbitmq_settings()
    # When its consumer timeout is read
    timeout_ms = int(settings["consumer_timeout"])
    # Then a consumer may hold a job for at least 4 hours (RabbitMQ's default of 30 minutes would
    # redeliver every long backup), heartbeats are on and per-queue metrics are exported
    assert timeout_ms >= 4 * 3600 * 1000
    assert int(settings["heartbeat"]) == 60
    assert settings["prometheus.return_per_object_metrics"] == "true"
    plugins = (DEPLOY / "rabbitmq" / "enabled_plugins").read_text()
    assert "rabbitmq_prometheus" in plugins and "rabbitmq_management" in plugins
    # And the README explains how to change it on a running 3.10 node
    assert "rabbitmqctl eval 'application:set_env(rabbit, consumer_timeout, 28800000).'" in (
        DEPLOY / "README.md").read_text()


def test_rabbitmq_conf_is_accepted_by_a_real_broker():
    # Given a throw-away RabbitMQ node (own name, ports and directories) loading rabbitmq.conf and
    # enabled_plugins as they are
    server, ctl = require_tool("rabbitmq-server"), require_tool("rabbitmqctl")
    import pwd
    try:
        rabbit_user = pwd.getpwnam("rabbitmq")
    except KeyError:
        rabbit_user = None
    if os.geteuid() != 0 and (rabbit_user is None or os.geteuid() != rabbit_user.pw_uid):
        _missing("starting rabbitmq-server needs root or the rabbitmq user")
    amqp, mgmt, prom, dist = free_port(), free_port(), free_port(), free_port()
    node = f"appsvcdrconf{os.getpid()}@localhost"
    base = Path(tempfile.mkdtemp(prefix="appsvc-dr-rabbitmq-conf-"))
    (base / "conf.d").mkdir()
    for sub in ("mnesia", "log", "home"):
        (base / sub).mkdir()
    shutil.copy(DEPLOY / "rabbitmq" / "rabbitmq.conf", base / "conf.d" / "20-appsvc-dr.conf")
    (base / "conf.d" / "99-test-ports.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{amqp}\nmanagement.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {mgmt}\n"
        f"prometheus.tcp.ip = 127.0.0.1\nprometheus.tcp.port = {prom}\n")
    if os.geteuid() == 0 and rabbit_user is not None:  # the Debian wrapper drops to the rabbitmq user
        for path in [base, *base.rglob("*")]:
            os.chown(path, rabbit_user.pw_uid, rabbit_user.pw_gid)
    env = {**os.environ, "RABBITMQ_NODENAME": node, "RABBITMQ_DIST_PORT": str(dist),
           "RABBITMQ_CONFIG_FILES": str(base / "conf.d"), "RABBITMQ_CONFIG_FILE": str(base / "none"),
           "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
           "RABBITMQ_ENABLED_PLUGINS_FILE": str(DEPLOY / "rabbitmq" / "enabled_plugins"),
           "RABBITMQ_MNESIA_BASE": str(base / "mnesia"), "RABBITMQ_LOG_BASE": str(base / "log"),
           "RABBITMQ_PID_FILE": str(base / "node.pid")}
    log = open(base / "server.out", "w")
    proc = subprocess.Popen([server], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    metrics_url = f"http://127.0.0.1:{prom}/metrics"
    try:
        # When the node has started
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"rabbitmq-server exited:\n{(base / 'server.out').read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no start within 90 s:\n{(base / 'server.out').read_text()[-3000:]}"
            try:
                urllib.request.urlopen(metrics_url, timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
        # Then it accepted the file and runs with our consumer timeout and heartbeat
        got = run([ctl, "-n", node, "-q", "eval",
                   "{application:get_env(rabbit, consumer_timeout), application:get_env(rabbit, heartbeat)}."],
                  env=env, timeout=60).stdout
        assert "{{ok,28800000},{ok,60}}" in got.replace(" ", "")
        # And a dead-letter queue shows up with its own queue label on the Prometheus endpoint
        request = urllib.request.Request(
            f"http://127.0.0.1:{mgmt}/api/queues/%2F/appsvc-dr.upload.dlq", method="PUT",
            data=json.dumps({"durable": True, "arguments": {"x-queue-type": "quorum"}}).encode(),
            headers={"content-type": "application/json", "authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="})  # guest, loopback
        urllib.request.urlopen(request, timeout=10)
        wanted = 'rabbitmq_queue_messages_ready{vhost="/",queue="appsvc-dr.upload.dlq"}'
        deadline = time.monotonic() + 30
        while wanted not in urllib.request.urlopen(metrics_url, timeout=5).read().decode():
            assert time.monotonic() < deadline, "per-queue metrics did not appear"
            time.sleep(1)
    finally:
        subprocess.run([ctl, "-n", node, "-q", "stop"], env=env, capture_output=True, timeout=60)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


# ---- Dockerfile and health check -------------------------------------------------------------------------

def test_dockerfile_builds_a_non_root_worker_image():
    # Given the Dockerfile (no Docker engine here, so it is checked statically)
    text = (DEPLOY / "Dockerfile").read_text()
    # When its instructions are read
    # Then it is python:3.11-slim with the ODBC drivers and pg_dump, optional msodbcsql18, a non-root user,
    # the appsvc-dr entrypoint and a health check on the metrics port
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    for package in ("unixodbc", "tdsodbc", "odbc-postgresql", "postgresql-client", "msodbcsql18"):
        assert package in text, package
    assert 'ARG INSTALL_MSODBCSQL=false' in text
    assert re.search(r"^USER 10001", text, re.M)
    assert 'ENTRYPOINT ["appsvc-dr"]' in text
    assert re.search(r"^HEALTHCHECK .*\n?.*appsvc-dr-healthcheck", text, re.M)
    assert "pip install ." in text
    # And every file it copies from the build context exists
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for item in source.split():
            assert (ROOT / item).exists(), f"COPY source {item} missing"


class _StatusHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response({"/healthz": 200, "/readyz": 503}.get(self.path, 404))
        self.end_headers()

    def log_message(self, *args):
        pass


def test_container_healthcheck_reports_the_workers_http_status():
    # Given a stand-in for the worker's status endpoint
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StatusHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    script = str(DEPLOY / "healthcheck.py")
    env = {**os.environ, "APPSVC_DR_METRICS__HOST": "0.0.0.0", "APPSVC_DR_METRICS__PORT": str(server.server_port)}
    try:
        # When the container health check runs against /healthz (200), /readyz (503) and a closed port
        healthy = subprocess.run([sys.executable, script], env=env, capture_output=True, timeout=30)
        not_ready = subprocess.run([sys.executable, script, "/readyz"], env=env, capture_output=True, timeout=30)
        closed = subprocess.run([sys.executable, script], capture_output=True, timeout=30,
                                env={**env, "APPSVC_DR_METRICS__PORT": str(free_port())})
    finally:
        server.shutdown()
        server.server_close()
    # Then only the 200 counts as healthy
    assert (healthy.returncode, not_ready.returncode, closed.returncode) == (0, 1, 1)
