"""deploy/rabbitmq: one broker user per producer role, applied to the REAL RabbitMQ and tried out.

deploy/rabbitmq/apply_users.py (what compose's rabbitmq-users service runs) applies definitions.json to a
fresh vhost, with throw-away user names and passwords given the way deploy/env/<env>/broker/<role>.env give
them. Then each role logs in and tries to publish: the broker itself accepts its own events and refuses the
others (ACCESS_REFUSED, topic permissions), refuses consuming another worker's queue, and a real worker runs
on its restricted login.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Iterator

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from contracts import JobFailed, JobFailedPayload
from tests.fixtures.rabbit import MGMT, mgmt, running, settings_for, vhost, wait_for
from tests.integration.deploy_support import DEPLOY, WORKERS
from workers.app import App, builtin_bindings
from workers.middleware.base import Middleware
from workers.runtime.topology import Topology

pytestmark = pytest.mark.integration

DEFINITIONS = json.loads((DEPLOY / "rabbitmq" / "definitions.json").read_text())
ROLES = [u["name"].removeprefix("appsvc-dr-") for u in DEFINITIONS["users"]]
EXCHANGE = "appsvc-dr"
# Who may publish what: every event type the workers emit (handlers' follow-ups, plus job-failed, which the
# runtime publishes when it dead-letters a job).
OWN_EVENTS = {
    "rotation-hook": {"secrets-rotated"},
    "scheduler": {"backup-due", "database-log-backup-requested"},
    "db-backup": {"database-backup-requested", "database-backed-up", "artifact-ready", "job-failed"},
    "fileshare": {"fileshare-synced", "artifact-stored", "job-failed"},
    "functions": {"functions-backed-up", "artifact-stored", "job-failed"},
    "secrets": {"secrets-stored", "backup-due", "artifact-stored", "job-failed"},
    "upload": {"artifact-stored", "job-failed"},
    "catalog": {"backup-set-completed", "job-failed"},
    "notifier": {"job-failed"},
    "mirror": {"artifact-mirrored", "job-failed"},
    "keda": set(),
}
ALL_EVENTS = sorted(set().union(*OWN_EVENTS.values()) | {"fileshare-sync-requested"})


@dataclass(frozen=True)
class Site:
    vhost: str
    logins: dict[str, tuple[str, str]]   # role -> (user name, password)

    def connection(self, role: str) -> pika.BlockingConnection:
        user, password = self.logins[role]
        return pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", 5672, self.vhost, pika.PlainCredentials(user, password)))


def publish_refusal(site: Site, role: str, routing_key: str, exchange: str = EXCHANGE) -> str | None:
    """Publish one persistent message with confirms as ``role``: None if the broker took it, else its refusal."""
    with contextlib.closing(site.connection(role)) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        try:
            channel.basic_publish(exchange, routing_key, b"{}", pika.BasicProperties(delivery_mode=2))
        except ChannelClosedByBroker as exc:
            return f"{exc.reply_code} {exc.reply_text}"
    return None


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    # Given a fresh vhost with the site's topology (declared by the admin) and, for each role, an env file
    # like deploy/env/dev/broker/<role>.env holding a throw-away user name and password
    env_dir = tmp_path_factory.mktemp("broker-env")
    tag = uuid.uuid4().hex[:8]
    logins = {role: (f"t{tag}-{role}", secrets.token_urlsafe(16)) for role in ROLES}
    for role, (user, password) in logins.items():
        (env_dir / f"{role}.env").write_text(
            f"# test\nAPPSVC_DR_BROKER__USERNAME={user}\nAPPSVC_DR_BROKER__PASSWORD={password}\n")
    with vhost() as name:
        settings = settings_for(name)
        with contextlib.closing(pika.BlockingConnection(pika.ConnectionParameters(
                "127.0.0.1", 5672, name, pika.PlainCredentials("guest", "guest")))) as conn:
            Topology.from_settings(settings.broker, settings.retry).declare(conn.channel(),
                                                                             sorted(builtin_bindings().items()))
        # When deploy/rabbitmq/apply_users.py applies definitions.json to it, as the admin
        env = {**os.environ, "RABBITMQ_DEFAULT_USER": "guest", "RABBITMQ_DEFAULT_PASS": "guest"}
        result = subprocess.run([sys.executable, str(DEPLOY / "rabbitmq" / "apply_users.py"), "--url", MGMT,
                                 "--vhost", name, "--env-dir", str(env_dir)],
                                env=env, capture_output=True, text=True, timeout=60)
        try:
            assert result.returncode == 0, result.stderr
            yield Site(name, logins)
        finally:
            for user, _ in logins.values():
                with contextlib.suppress(Exception):
                    mgmt("DELETE", f"/api/users/{user}")


def test_definitions_have_one_user_per_producer_role_and_worker():
    # Given deploy/rabbitmq/definitions.json, Then there is a user for the hook, the scheduler, every deployed
    # worker and KEDA, with topic permissions only on the appsvc-dr exchange, and no password in the file
    assert set(ROLES) == {"rotation-hook", "scheduler", "keda", *WORKERS}
    assert all(u["password_hash"] == "" for u in DEFINITIONS["users"])
    assert {t["exchange"] for t in DEFINITIONS["topic_permissions"]} == {EXCHANGE}


@pytest.mark.parametrize("role", [r for r in OWN_EVENTS if r != "keda"])
def test_each_role_publishes_its_own_events_and_the_broker_refuses_the_rest(site: Site, role: str):
    # When the role publishes every event type of the site
    refused = {key: publish_refusal(site, role, key) for key in ALL_EVENTS}
    # Then the broker took exactly its own events and refused every other one with ACCESS_REFUSED
    assert {key for key, why in refused.items() if why is None} == OWN_EVENTS[role]
    for key, why in refused.items():
        if key not in OWN_EVENTS[role]:
            assert why is not None and why.startswith("403 ACCESS_REFUSED") and f"topic '{key}'" in why, why


def test_the_rotation_hook_is_refused_backup_due_and_artifact_ready(site: Site):
    # Given the rotation hook's login, When it publishes secrets-rotated, backup-due and artifact-ready
    # Then only secrets-rotated goes through; the other two are refused by the broker on the channel
    assert publish_refusal(site, "rotation-hook", "secrets-rotated") is None
    for key in ("backup-due", "artifact-ready"):
        assert publish_refusal(site, "rotation-hook", key).startswith("403 ACCESS_REFUSED")
    # And the producers cannot bypass the exchange by publishing straight to a queue (default exchange)
    for role in ("rotation-hook", "scheduler"):
        why = publish_refusal(site, role, f"{EXCHANGE}.upload", exchange="")
        assert why.startswith("403 ACCESS_REFUSED") and "amq.default" in why


def test_the_rotation_hook_publishes_over_the_management_api_like_the_powershell_hook(site: Site):
    # Given the hook's login on the management HTTP API (Publish-SecretsRotated.ps1 publishes that way)
    user, password = site.logins["rotation-hook"]
    auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    url = f"{MGMT}/api/exchanges/{urllib.parse.quote(site.vhost, safe='')}/{EXCHANGE}/publish"

    def publish(key: str) -> tuple[int, str]:
        body = json.dumps({"properties": {"delivery_mode": 2}, "routing_key": key, "payload": "{}",
                           "payload_encoding": "string"}).encode()
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Authorization": auth, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
    # When it publishes secrets-rotated and backup-due, Then the first is routed, the second refused
    status, text = publish("secrets-rotated")
    assert status == 200 and json.loads(text)["routed"] is True
    status, text = publish("backup-due")
    assert status != 200 and "access_refused" in text.lower(), (status, text)


@pytest.mark.parametrize("role", WORKERS)
def test_a_worker_consumes_only_its_own_queue(site: Site, role: str):
    # Given a worker's login
    topology = Topology.from_settings(settings_for(site.vhost).broker, settings_for(site.vhost).retry)
    other = next(w for w in WORKERS if w != role)
    with contextlib.closing(site.connection(role)) as conn:
        # When it reads its own queue, Then that works
        conn.channel().basic_get(topology.queues(role).main)
        # When it reads another worker's queue or dead letters, Then the broker refuses
        for queue in (topology.queues(other).main, topology.queues(role).dlq):
            with pytest.raises(ChannelClosedByBroker) as caught:
                conn.channel().basic_get(queue)
            assert caught.value.reply_code == 403


def test_the_keda_user_can_neither_publish_nor_consume(site: Site):
    assert publish_refusal(site, "keda", "backup-due").startswith("403 ACCESS_REFUSED")
    with contextlib.closing(site.connection("keda")) as conn, pytest.raises(ChannelClosedByBroker):
        conn.channel().basic_get(f"{EXCHANGE}.upload")


class Outcomes(Middleware):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def after_job(self, worker: str, event_type: str, outcome: str, duration: float | None) -> None:
        self.seen.append((event_type, outcome))


def test_a_real_worker_runs_on_its_restricted_login(site: Site):
    # Given the notifier worker logging in as its role (it declares the site's topology at start-up)
    user, password = site.logins["notifier"]
    settings = settings_for(site.vhost, broker={"username": user, "password": password})
    outcomes = Outcomes()
    app = App(settings, ["notifier"], middleware=[outcomes])
    with running(app):
        # When a job-failed arrives, Then the notifier consumes and acks it
        failed = JobFailed(source="test", stamp="stamp1", correlation_id="set-1", payload=JobFailedPayload(
            worker="upload", failed_event_id=None, failed_event_type="artifact-ready", error_class="PermanentError",
            message="m", attempts=1, will_retry=False, hint="h", dead_letter_queue="q"))
        with contextlib.closing(site.connection("upload")) as conn:
            channel = conn.channel()
            channel.confirm_delivery()
            channel.basic_publish(EXCHANGE, "job-failed", failed.to_json(), pika.BasicProperties(delivery_mode=2))
        # (the "{}" bodies the tests above published wait there too: it dead-letters them through the default
        # exchange, which its login may also do)
        wait_for(lambda: ("job-failed", "ok") in outcomes.seen, 20, what="notifier to handle the event")
    assert set(outcomes.seen) <= {("job-failed", "ok"), ("unknown", "rejected")}
