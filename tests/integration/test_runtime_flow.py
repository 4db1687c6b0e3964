"""The runtime against the real RabbitMQ: follow-ups, retries, dead letters, malformed input, replay, metrics."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pika
import pytest

from contracts import BackupDue, BackupDuePayload, Registry, default_registry
from tests.fixtures.rabbit import dead_letters, queue_count, running, settings_for, wait_for
from tests.integration.sample_workers import Ping, PingPayload, Pong, flaky, transient_once
from workers.app import App
from workers.middleware.base import Middleware
from workers.runtime import dlq
from workers.runtime.errors import PermanentError
from workers.runtime.worker import WorkerSpec
from workers.runtime.publisher import Publisher
from workers.runtime.topology import Topology

pytestmark = pytest.mark.integration


def backup_due(set_id: str = "set-1") -> BackupDue:
    return BackupDue(source="test", stamp="stamp1", correlation_id=set_id,
                     payload=BackupDuePayload(backup_set_id=set_id))


def test_follow_up_is_published_and_seen_by_a_second_worker(settings):
    # Given a worker that answers test-ping with test-pong, and a second worker consuming test-pong
    registry = Registry([*default_registry().models(), Ping, Pong])
    pongs = []

    def pinger(deps):
        return WorkerSpec("pinger", {Ping: lambda e, ctx: [e.follow_up(Pong, e.payload, source="pinger")]})

    def ponger(deps):
        return WorkerSpec("ponger", {Pong: lambda e, ctx: pongs.append(e)})

    app = App(settings, [pinger, ponger], registry=registry)
    with running(app):
        # When a ping is published
        ping = Ping(source="test", stamp="stamp1", correlation_id="set-7", payload=PingPayload(n=42))
        with Publisher(settings.broker) as pub:
            pub.publish(ping)
        # Then the second worker sees the pong, caused by the ping, in the same backup set
        wait_for(lambda: pongs, 15, what="pong")
    assert pongs[0].causation_id == ping.event_id
    assert pongs[0].correlation_id == "set-7" and pongs[0].payload.n == 42


def test_transient_failure_is_retried_after_the_backoff_and_succeeds(settings, trace_dir):
    # Given a worker whose first attempt fails transiently (backoff 0.5 s)
    app = App(settings, [transient_once])
    with running(app):
        event = backup_due()
        with Publisher(settings.broker) as pub:
            pub.publish(event)
        # When it is retried
        done = trace_dir / f"{event.event_id}.done"
        wait_for(done.exists, 20, what="retried job to finish")
        text = wait_for(lambda: 'outcome="ok"' in (t := _metrics(app)) and t, 5)
    # Then the second attempt started no earlier than the backoff delay after the first
    first = (trace_dir / f"{event.event_id}.attempt0").stat().st_mtime
    second = (trace_dir / f"{event.event_id}.attempt1").stat().st_mtime
    assert second - first >= 0.45
    queues = Topology.from_settings(settings.broker, settings.retry).queues("transient")
    assert queue_count(settings.broker.vhost, queues.dlq) == 0
    assert 'appsvc_dr_events_consumed_total{event_type="backup-due",outcome="retried",worker="transient"} 1.0' in text
    assert 'appsvc_dr_events_consumed_total{event_type="backup-due",outcome="ok",worker="transient"} 1.0' in text
    assert 'appsvc_dr_retries_total{event_type="backup-due",worker="transient"} 1.0' in text
    assert 'appsvc_dr_job_duration_seconds_count{event_type="backup-due",worker="transient"} 2.0' in text
    assert 'appsvc_dr_job_duration_seconds_bucket{event_type="backup-due",le="21600.0",worker="transient"} 2.0' in text
    assert 'appsvc_dr_jobs_in_progress{worker="transient"} 0.0' in text
    assert 'appsvc_dr_broker_connected{worker="transient"} 1.0' in text


def _metrics(app: App) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{app.status.port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def _raw_publish(settings, routing_key: str, body: bytes) -> None:
    with Publisher(settings.broker) as pub:
        pub.publish_raw(settings.broker.exchange, routing_key, body,
                        pika.BasicProperties(delivery_mode=2, content_type="application/json"))


def test_malformed_messages_are_dead_lettered_with_the_reason_and_the_worker_goes_on(settings, trace_dir):
    # Given a running worker bound to backup-due
    app = App(settings, [flaky])
    with running(app):
        # When garbage, a wrong schema and an unknown type arrive, then a good event
        _raw_publish(settings, "backup-due", b"\x00\xffnot json at all")
        _raw_publish(settings, "backup-due", json.dumps({"type": "backup-due", "version": 1, "source": "x",
                                                         "stamp": "s", "correlation_id": "c",
                                                         "payload": {"bogus": 1}}).encode())
        _raw_publish(settings, "backup-due", json.dumps({"type": "no-such-event", "version": 1}).encode())
        good = backup_due("after-garbage")
        with Publisher(settings.broker) as pub:
            pub.publish(good)
        # Then the good one is processed
        wait_for((trace_dir / f"{good.event_id}.done").exists, 20, what="good event")
        letters = wait_for(lambda: len(dead_letters(settings, "flaky")) == 3 and dead_letters(settings, "flaky"), 10)
    # And the three bad ones wait in the dead-letter queue with their reasons
    reasons = sorted(d.reason for d in letters)
    assert reasons == ["invalid", "not-json", "unknown-type"]
    invalid = next(d for d in letters if d.reason == "invalid")
    assert "payload.backup_set_id" in invalid.header("x-dr-error") and invalid.header("x-dr-hint")
    # And each rejection was announced as job-failed on the notifier's queue
    notifier_q = Topology.from_settings(settings.broker, settings.retry).queues("notifier").main
    assert wait_for(lambda: queue_count(settings.broker.vhost, notifier_q) == 3, 10)


class Outcomes(Middleware):
    """Every outcome the worker reached, in order: one entry per delivery that finished."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def after_job(self, worker: str, event_type: str, outcome: str, duration: float | None) -> None:
        self.seen.append((event_type, outcome))


def test_a_10000_deep_json_event_is_dead_lettered_as_malformed_on_its_first_delivery(settings, trace_dir):
    # Given a running worker bound to backup-due
    outcomes = Outcomes()
    app = App(settings, [flaky], middleware=[outcomes])
    with running(app):
        # When a body nested 10,000 levels deep arrives, then a good event
        _raw_publish(settings, "backup-due", b"[" * 10_000 + b"]" * 10_000)
        good = backup_due("after-deep")
        with Publisher(settings.broker) as pub:
            pub.publish(good)
        # Then the good one is processed after it
        wait_for((trace_dir / f"{good.event_id}.done").exists, 20, what="good event")
        letters = wait_for(lambda: dead_letters(settings, "flaky"), 10, what="dead letter")
        main = Topology.from_settings(settings.broker, settings.retry).queues("flaky").main
        assert wait_for(lambda: queue_count(settings.broker.vhost, main) == 0, 10)
    # And the deep one was rejected as malformed by the worker on its first and only delivery (not by the
    # broker's delivery limit after a crash loop)
    [letter] = letters
    assert letter.reason == "too-deep" and "nested deeper" in letter.header("x-dr-error")
    assert letter.headers.get("x-dr-attempts") == 1 and "x-death" not in letter.headers
    assert outcomes.seen == [("unknown", "rejected"), ("backup-due", "ok")]


def test_permanent_failure_dead_letters_then_replay_after_the_fix_processes_it(settings, trace_dir):
    # Given a worker whose target is broken
    (trace_dir / "broken").write_text("")
    app = App(settings, [flaky])
    with running(app):
        event = backup_due("replay-me")
        with Publisher(settings.broker) as pub:
            pub.publish(event)
        # When the job fails permanently, it lands in the DLQ at once with the reason and the hint
        letters = wait_for(lambda: dead_letters(settings, "flaky"), 15, what="dead letter")
        assert letters[0].event_id == str(event.event_id)
        assert letters[0].reason == "permanent"
        assert letters[0].header("x-dr-hint") == "Make the store writable, then replay."
        assert not (trace_dir / f"{event.event_id}.done").exists()
        # When the cause is fixed and the operator replays
        (trace_dir / "broken").unlink()
        assert dlq.replay(settings.broker, settings.retry, "flaky") == 1
        # Then the job completes and the DLQ is empty
        wait_for((trace_dir / f"{event.event_id}.done").exists, 15, what="replayed job")
        text = wait_for(lambda: 'outcome="ok"' in (t := _metrics(app)) and t, 5)
    assert dead_letters(settings, "flaky") == []
    assert 'appsvc_dr_events_consumed_total{event_type="backup-due",outcome="dead_lettered",worker="flaky"} 1.0' in text
    assert 'appsvc_dr_dead_letters_total{event_type="backup-due",reason="permanent",worker="flaky"} 1.0' in text
    assert 'appsvc_dr_last_success_timestamp_seconds{event_type="backup-due",worker="flaky"}' in text
    assert 'appsvc_dr_broker_connected{worker="flaky"}' in text


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_health_and_readiness_follow_the_broker_connection(rabbit_vhost):
    # Given a worker pointed at a broker port where nothing listens
    from tests.fixtures import closed_port
    import threading
    settings = settings_for(rabbit_vhost, broker={"port": closed_port()})
    app = App(settings, [flaky])
    thread = threading.Thread(target=app.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: app.status is not None, 10, what="status server")
        base = f"http://127.0.0.1:{app.status.port}"
        # Then it is alive but not ready, and says which worker is not connected
        assert _get(base + "/healthz")[0] == 200
        code, body = _get(base + "/readyz")
        assert code == 503 and json.loads(body) == {"ready": False, "workers": {"flaky": False}}
    finally:
        app.stop()
        thread.join(30)
    # And with the real broker it becomes ready
    app = App(settings_for(rabbit_vhost), [flaky])
    with running(app):
        code, body = _get(f"http://127.0.0.1:{app.status.port}/readyz")
        assert code == 200 and json.loads(body)["workers"] == {"flaky": True}


def test_a_deleted_retry_queue_loses_nothing_the_worker_redeclares_and_retries(settings, trace_dir):
    # Given a running worker whose first retry queue an operator deleted
    from tests.fixtures.rabbit import mgmt
    app = App(settings, [transient_once])
    queues = Topology.from_settings(settings.broker, settings.retry).queues("transient")
    with running(app):
        mgmt("DELETE", f"/api/queues/{settings.broker.vhost}/{queues.retries[0][1]}")
        # When a job fails transiently and its retry copy finds no queue
        event = backup_due("no-retry-queue")
        with Publisher(settings.broker) as pub:
            pub.publish(event)
        # Then the delivery is requeued, the topology re-declared, and the retry completes the job
        wait_for((trace_dir / f"{event.event_id}.done").exists, 30, what="job after re-declare")
    assert queue_count(settings.broker.vhost, queues.dlq) == 0


def test_jobs_finishing_out_of_order_are_each_acked_once_on_one_connection(rabbit_vhost):
    # Given a worker with 4 job threads where every fourth job is slow, so later deliveries finish first, and
    # every fifth fails for good (its ack waits for the dead-letter copy's confirm)
    settings = settings_for(rabbit_vhost, worker={"prefetch": 8, "concurrency": 4})
    registry = Registry([*default_registry().models(), Ping, Pong])
    seen: list[int] = []

    def handle(event, ctx):
        seen.append(event.payload.n)
        time.sleep(0.3 if event.payload.n % 4 == 0 else 0.0)
        if event.payload.n % 5 == 0:
            raise PermanentError("refused on purpose", hint="none")
        return [event.follow_up(Pong, event.payload, source="pinger")]

    app = App(settings, [lambda deps: WorkerSpec("pinger", {Ping: handle}, concurrency=4),
                         lambda deps: WorkerSpec("ponger", {Pong: lambda e, ctx: None})], registry=registry)
    runner = app.runners[0]
    with running(app):
        # When 40 pings arrive at once
        with Publisher(settings.broker) as pub:
            for n in range(40):
                pub.publish(Ping(source="test", stamp="stamp1", correlation_id="set-1", payload=PingPayload(n=n)))
        wait_for(lambda: len(seen) >= 40 and runner.in_flight == 0, 30, what="40 jobs settled")
        time.sleep(0.5)  # a wrong ack (unknown delivery tag) would close the channel and redeliver
        # Then each was handled once, the channel never dropped (a double ack closes it), and nothing is left
        assert sorted(seen) == list(range(40)) and runner.disconnects == 0
    topology = Topology.from_settings(settings.broker, settings.retry)
    assert queue_count(rabbit_vhost, topology.queues("pinger").main) == 0
    assert wait_for(lambda: queue_count(rabbit_vhost, topology.queues("pinger").dlq) == 8, 15, what="8 dead letters")
