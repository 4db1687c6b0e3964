"""The dashboard and the alerts against a real Prometheus scraping real worker processes and RabbitMQ's plugin.

One scenario drives known events through worker processes (`appsvc-dr worker ...`, as the other integration
tests start them), then every query of deploy/grafana/dashboards/*.json and every alert expression of
deploy/prometheus/alerts.yml is evaluated through Prometheus' HTTP API: each must return data, and the counts
must equal the events sent. A new panel or alert is covered automatically; when it needs a signal the
scenario does not produce yet, extend the scenario (and EXPECTED) rather than exempt it.

The workers are `tests.integration.sample_workers:standin` processes running under built-in worker names (the
dashboard and alerts select on those names), plus the real notifier, catalog and secrets workers on a prepared
store (tests/integration/dashboard_scenario.py: an RPO breached, a set that expires, secrets older than the last
rotation received), the real mirror worker on a nearly full store whose target is down, and a real scheduler (`appsvc-dr schedule`), scraped and then stopped.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from datetime import datetime, timezone

import pytest

from contracts import (BackupDue, BackupDuePayload, BackupSetCompleted, BackupSetCompletedPayload, SecretsRotated,
                       SecretsRotatedPayload)
from tests.fixtures import closed_port, free_port, require_service, started
from tests.fixtures.prometheus import Prometheus, openmetrics
from tests.fixtures.rabbit import REPO, env_for, settings_for, spawn_worker, wait_for
from tests.integration.dashboard_scenario import (COMPLETE_AGE, MIRROR_FREE, MIRROR_LAG, ROTATION_GAP,
                                                  RecoveryPoints)
from tests.integration.deploy_support import DEPLOY, PROM, load_alert_rules
from workers.runtime.publisher import Publisher

pytestmark = pytest.mark.integration

RABBIT_METRICS = "127.0.0.1:15692"
DASHBOARD_VARIABLES = {"$__rate_interval": "1m", "$window": "1h", "$worker": ".*"}
RETRY_STORM = 21          # db-backup jobs retried once: with SET_RETRY's 2, above AppsvcDrRetryStorm's 20
SET_OK, SET_RETRY, SET_DEAD = "ok-all-1", "retry2-db-backup-1", "dead-db-backup-1"
DB_RETRIES = 2 + RETRY_STORM
SCENARIO_SETS = 3 + RETRY_STORM   # backup-due sent: the catalog plans each (SET_DEAD then fails)


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr with Grafana's variables replaced) for every target of every dashboard."""
    out = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for var, value in DASHBOARD_VARIABLES.items():
                    expr = expr.replace(var, value)
                out.append((f"{path.name}: {panel['title']}", expr))
    return out


# What the scenario must show: (substring of a dashboard query or an alert name, labels) -> value.
EXPECTED = {
    ("Dead letters (per $window)", (("outcome", "dead_lettered"), ("worker", "db-backup"))): 1,
    ("Retries and events published", (("event_type", "backup-due"), ("worker", "db-backup"))): DB_RETRIES,
    ("Events consumed by outcome", (("outcome", "retried"), ("worker", "db-backup"))): DB_RETRIES,
    ("Events consumed by outcome", (("outcome", "dead_lettered"), ("worker", "db-backup"))): 1,
    ("Workers up", (("worker", "fileshare"),)): 0,
    ("Workers up", (("worker", "db-backup"),)): 1,
    ("Broker connection", (("worker", "fileshare"),)): 0,
    ("Broker connection", (("worker", "upload"),)): 0,
    ("Broker connection", (("worker", "db-backup"),)): 1,
    ("Restore drills", (("stamp", "stamp2"),)): float("inf"),
    ("AppsvcDrNoRecentRestoreDrill", (("stamp", "stamp2"),)): float("inf"),
    # the drills of the secondary copy dr-site (the mirror worker's target) only ever failed for stamp1
    ("Restore drills of secondary copies", (("stamp", "stamp1"), ("store", "dr-site"))): float("inf"),
    ("AppsvcDrNoRecentSecondaryRestoreDrill", (("stamp", "stamp1"), ("store", "dr-site"))): float("inf"),
    ("Dead-letter queues", (("queue", "appsvc-dr.db-backup.dlq"),)): 1,
    ("AppsvcDrJobDeadLettered", (("event_type", "backup-due"), ("outcome", "dead_lettered"),
                                 ("worker", "db-backup"))): 1,
    ("AppsvcDrRetryStorm", (("event_type", "backup-due"), ("worker", "db-backup"))): DB_RETRIES,
    ("AppsvcDrWorkerDown", (("worker", "fileshare"),)): 0,
    ("AppsvcDrBrokerDisconnected", (("worker", "upload"),)): 0,
    ("AppsvcDrNoRecentSuccess", (("worker", "upload"),)): float("inf"),
    # the real mirror worker: its target never answers (hours behind), its primary has MIRROR_FREE bytes left
    ("AppsvcDrMirrorLagging", (("target", "dr-site"),)): f"> {MIRROR_LAG.total_seconds() / 3600 - 0.1}",
    ("Mirror lag", (("target", "dr-site"),)): f"> {MIRROR_LAG.total_seconds() - 360}",
    ("Mirror backlog", (("target", "dr-site"),)): "> 0",
    ("AppsvcDrStoreWillNotFitNextSet", (("target", "primary"),)): f"> {MIRROR_FREE}",
    # the real catalog on the prepared store: the old complete set, the set it expired, the scenario's sets
    # (SET_DEAD failed by db-backup's dead letter, the others still planned)
    ("Backup sets by state", (("stamp", "stamp1"), ("state", "complete"))): 1,
    ("Backup sets by state", (("stamp", "stamp1"), ("state", "expired"))): 1,
    ("Backup sets by state", (("stamp", "stamp1"), ("state", "failed"))): 1,
    ("Backup sets by state", (("stamp", "stamp1"), ("state", "planned"))): SCENARIO_SETS - 1,
    ("Backup sets by state", (("stamp", "stamp1"), ("state", "in-progress"))): 0,
    ("Failed / expired sets not yet covered", (("stamp", "stamp1"), ("state", "failed"))): 1,
    ("Failed / expired sets not yet covered", (("stamp", "stamp1"), ("state", "expired"))): 1,
    ("AppsvcDrBackupSetFailed", (("stamp", "stamp1"), ("state", "failed"))): 1,
    ("AppsvcDrBackupSetFailed", (("stamp", "stamp1"), ("state", "expired"))): 1,
    ("Last set duration", (("stamp", "stamp1"),)): 20 * 60,
    # the RPO is the age of the old complete set (plus the minutes the test has run)
    ("RPO per stamp", (("stamp", "stamp1"),)): pytest.approx(COMPLETE_AGE.total_seconds(), abs=300),
    ("AppsvcDrRpoBreached", (("stamp", "stamp1"),)): pytest.approx(COMPLETE_AGE.total_seconds(), abs=300),
    # the secrets worker received a rotation an hour newer than the stored version, and could not handle it
    ("AppsvcDrSecretsOlderThanLastRotation", (("stamp", "stamp1"),)): ROTATION_GAP.total_seconds(),
    ("Dead letters (per $window)", (("outcome", "dead_lettered"), ("worker", "secrets"))): 1,
    # secrets@stamp2 has stored nothing
    ("AppsvcDrNoSecretsStored", (("worker", "secrets"),)): 1,
    # the scheduler was scraped, then stopped
    ("AppsvcDrSchedulerStuck", (("worker", "scheduler"),)): 0,
    # db-backup's full backup of a FULL-recovery database nobody backs up the log of (sample_workers: simulator)
    ("AppsvcDrDatabaseLogNotBackedUp", (("database", "appservice_hosting"),)): float("inf"),
}


def labels_of(sample: dict, keys) -> tuple:
    return tuple(sorted((k, sample["metric"].get(k)) for k in keys))


def values_by_labels(result: list[dict], keys) -> dict[tuple, float]:
    return {labels_of(s, keys): float(s["value"][1]) for s in result}


def scrape_ok(port: int | str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2):
            return True
    except OSError:
        return False


def backup_due(set_id: str) -> BackupDue:
    """A set of the databases only (the stand-in db-backup acts on it; the real secrets worker has nothing to do)."""
    return BackupDue(source="test", stamp="stamp1", correlation_id=set_id,
                     payload=BackupDuePayload(backup_set_id=set_id, components=("databases",)))


def rotation(points: RecoveryPoints) -> SecretsRotated:
    """A rotation an hour newer than the stored version, whose drop file was never dropped."""
    return SecretsRotated(source="test", stamp="stamp1", correlation_id="rotation-1", payload=SecretsRotatedPayload(
        drop_path=points.missing_drop(), rotated_by="test", rotated_at=points.rotated_at + ROTATION_GAP))


def set_completed(set_id: str) -> BackupSetCompleted:
    return BackupSetCompleted(source="test", stamp="stamp1", correlation_id=set_id, payload=BackupSetCompletedPayload(
        components=("databases",), artifacts=1, stored_bytes=10, completed_at=datetime.now(timezone.utc)))


REAL = ("notifier", "catalog", "secrets", "mirror")
# Processes: "<worker>[@<stamp>]". secrets@stamp2 serves a second site whose secrets were never stored.
PROCESSES = ("db-backup", "catalog", "secrets", "secrets@stamp2", "fileshare", "upload", "notifier", "mirror")


def worker_of(process: str) -> str:
    return process.partition("@")[0]


@pytest.fixture
def recovery_points(tmp_path):
    return RecoveryPoints(tmp_path / "site")


@pytest.fixture
def workers(rabbit_vhost, recovery_points, tmp_path):
    """Worker processes with their metrics ports: PROCESSES name -> (process, port). upload cannot reach the
    broker."""
    settings = settings_for(rabbit_vhost, notify={"webhook_urls": [f"http://127.0.0.1:{closed_port()}/hook"]},
                            **recovery_points.settings())
    procs: dict[str, tuple] = {}
    logs: dict[str, list[str]] = {}  # drained as they come, so a chatty worker never blocks on a full pipe
    try:
        for name in PROCESSES:
            worker, _, stamp = name.partition("@")
            port = free_port()
            env = {"APPSVC_DR_METRICS__PORT": str(port), "APPSVC_DR_TEST_WORKER_NAME": worker}
            if stamp:
                env["APPSVC_DR_STAMP"] = stamp
            if name == "upload":
                env["APPSVC_DR_BROKER__PORT"] = str(closed_port())
            if name == "mirror":
                env.update(recovery_points.mirror_site(tmp_path / "mirror-primary"))
            factory = worker if worker in REAL else "tests.integration.sample_workers:standin"
            procs[name] = (spawn_worker(factory, settings, **env), port)
            logs[name] = []
            threading.Thread(target=lambda p=procs[name][0], out=logs[name]: out.extend(p.stdout), daemon=True).start()
        for name, (proc, port) in procs.items():
            # many interpreters start at once: on a loaded 2-core machine one took over 30 s
            wait_for(lambda: scrape_ok(port) or proc.poll() is not None, 120, what=f"{name} metrics")
            assert proc.poll() is None, f"{name} exited: {''.join(logs[name])[-3000:]}"
        yield settings, procs
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in procs.values():
            try:
                proc.wait(30)
            except Exception:  # noqa: BLE001 - never leave a worker behind
                proc.kill()


@pytest.fixture
def scheduler(workers):
    """A real `appsvc-dr schedule` (yearly slot, no catch-up: it publishes nothing during the test) with its
    metrics port: (process, port)."""
    settings, _ = workers
    port = free_port()
    env = {**env_for(settings), "APPSVC_DR_METRICS__PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "schedule", "--cron", "0 0 1 1 *",
                             "--components", "databases", "--no-catch-up"], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True).start()
    try:
        wait_for(lambda: scrape_ok(port) or proc.poll() is not None, 30, what="scheduler metrics")
        assert proc.poll() is None, f"scheduler exited: {''.join(log)[-3000:]}"
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def drill_textfile(tmp_path):
    """What node_exporter's textfile collector serves after `appsvc-dr drill --textfile F` (stamp1's drill
    passed an hour ago, stamp2's drills only ever failed) and `appsvc-dr --store dr-site drill --textfile F2`
    (stamp1's drills of that copy only ever failed): both files, as the collector merges them. Returns the port
    it is served on."""
    from workers.drill.results import write_textfile
    path, secondary = tmp_path / "appsvc_dr_drill.prom", tmp_path / "appsvc_dr_drill_secondary.prom"
    write_textfile(str(path), {("stamp1", "passed"): time.time() - 3600, ("stamp2", "failed"): time.time() - 60})
    write_textfile(str(secondary), {("stamp1", "failed"): time.time() - 60}, copy="dr-site")

    class Textfile(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = path.read_bytes() + secondary.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    server = ThreadingHTTPServer(("127.0.0.1", 0), Textfile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()
    server.server_close()


def scrape_configs(procs: dict, vhost: str, drill_port: int, scheduler_port: int) -> list[dict]:
    """The shape of deploy/prometheus/prometheus.yml (job appsvc-dr with worker labels, jobs scheduler and
    rabbitmq), with local targets. RabbitMQ's series are kept for this test's vhost only (the broker is shared);
    a second rabbitmq target nobody listens on makes AppsvcDrRabbitMQMetricsDown observable. Job node: the
    drill textfile."""
    return [
        {"job_name": "node", "static_configs": [{"targets": [f"127.0.0.1:{drill_port}"]}]},
        {"job_name": "appsvc-dr", "honor_labels": True,
         "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": {"worker": worker_of(name)}}
                            for name, (_, port) in procs.items()]},
        {"job_name": "scheduler", "honor_labels": True,
         "static_configs": [{"targets": [f"127.0.0.1:{scheduler_port}"], "labels": {"worker": "scheduler"}}]},
        {"job_name": "rabbitmq", "static_configs": [{"targets": [RABBIT_METRICS, f"127.0.0.1:{closed_port()}"]}],
         "metric_relabel_configs": [{"source_labels": ["vhost"], "regex": vhost, "action": "keep"}]},
    ]


def history_of_upload(port: int) -> str:
    """upload's target was scraped (up 1) from 28 h until 25 h ago: AppsvcDrNoRecentSuccess needs 26 h of it."""
    now = time.time()
    labels = {"job": "appsvc-dr", "instance": f"127.0.0.1:{port}", "worker": "upload"}
    return openmetrics([("up", labels, 1, at) for at in range(int(now - 28 * 3600), int(now - 25 * 3600), 60)])


def test_every_dashboard_query_and_alert_shows_the_events_sent(workers, scheduler, recovery_points, drill_textfile,
                                                               rabbit_vhost, tmp_path, yaml):
    settings, procs = workers
    scheduler_proc, scheduler_port = scheduler
    if not scrape_ok(RABBIT_METRICS.rpartition(":")[2]):
        require_service("RabbitMQ's rabbitmq_prometheus plugin", f"nothing answers on {RABBIT_METRICS}; run "
                        "deploy/setup.sh (it enables the plugin)")
    prometheus = Prometheus(tmp_path / "prometheus", scrape_configs(procs, rabbit_vhost, drill_textfile, scheduler_port),
                            rule_files=[PROM / "alerts.yml"], backfill=history_of_upload(procs["upload"][1]))
    with started("Prometheus", prometheus) as prom:
        # Given a freshly started Prometheus that has scraped every worker's zero-initialised counters once
        wait_for(lambda: len(prom.query('up{job="appsvc-dr"} == 1')) == len(PROCESSES), 30, what="every worker scraped")
        # And the scheduler's next slot (and then the scheduler's stop, below)
        wait_for(lambda: prom.query('appsvc_dr_schedule_next_slot_timestamp_seconds{worker="scheduler"}'), 30,
                 what="the scheduler scraped")
        # When one job is dead-lettered, one retried twice, 21 more retried once, the others succeed
        with Publisher(settings.broker) as pub:
            pub.publish(backup_due(SET_DEAD))
            dead_lettered_at = time.time()
            pub.publish(backup_due(SET_OK))
            pub.publish(backup_due(SET_RETRY))
            for i in range(RETRY_STORM):
                pub.publish(backup_due(f"retry1-db-backup-{i}"))
            pub.publish(set_completed(SET_OK))
            # And a secrets rotation arrives whose drop file is missing
            pub.publish(rotation(recovery_points))
        # And the fileshare worker and the scheduler stop
        for proc in (procs["fileshare"][0], scheduler_proc):
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)

        # Then db-backup's dead letter alerts (firing) within 2 minutes of a fresh Prometheus (the secrets worker's
        # may fire first: it is waited for, not assumed to be the first one)
        wait_for(lambda: [a for a in prom.alerts() if a["labels"]["alertname"] == "AppsvcDrJobDeadLettered"
                          and a["state"] == "firing" and a["labels"]["worker"] == "db-backup"], 120, 1,
                 what="AppsvcDrJobDeadLettered firing for db-backup")
        assert time.time() - prometheus.started_at < 120 and time.time() - dead_lettered_at < 120

        # And every dashboard query and alert expression returns data, with the counts of the events sent
        checks = [(title, expr) for title, expr in dashboard_queries()]
        checks += [(rule["alert"], rule["expr"]) for rule in load_alert_rules(yaml)]
        for (what, labels), value in EXPECTED.items():
            matching = [expr for title, expr in checks if what in title]
            assert matching, f"EXPECTED names {what!r}, which is no dashboard panel or alert"
            keys = [k for k, _ in labels]

            def shown(exprs=matching, keys=keys, labels=labels, value=value):
                found = [values_by_labels(prom.query(e), keys).get(labels) for e in exprs]
                if isinstance(value, str):                      # "> N": a measured age or size
                    return any(v is not None and v > float(value[2:]) for v in found)
                return value in found
            wait_for(shown, 60, 1, what=f"{what} {dict(labels)} == {value}: "
                     f"{[values_by_labels(prom.query(e), keys) for e in matching]}")
        empty = [(title, expr) for title, expr in checks if not prom.query(expr)]
        assert not empty, "these return no data:\n" + "\n".join(f"{t}: {e}" for t, e in empty)

    # And a Prometheus started only after the dead letter (no history, the count already 1 at its first
    # scrape) alerts on it too, within 2 minutes of its start: the worker's last-failure time carries it
    fresh = Prometheus(tmp_path / "prometheus-fresh", scrape_configs(procs, rabbit_vhost, drill_textfile, scheduler_port),
                       rule_files=[PROM / "alerts.yml"])
    with started("Prometheus", fresh) as prom:
        firing = wait_for(lambda: [a for a in prom.alerts() if a["labels"]["alertname"] == "AppsvcDrJobDeadLettered"
                                   and a["state"] == "firing" and a["labels"]["worker"] == "db-backup"],
                          120, 1, what="AppsvcDrJobDeadLettered firing on a Prometheus started after the failure")
        assert time.time() - fresh.started_at < 120
        assert float(firing[0]["value"]) == 1
