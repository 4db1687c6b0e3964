"""Crashes, restarts, long jobs and shutdowns against the real RabbitMQ: nothing is lost."""
from __future__ import annotations

import signal
import subprocess
import threading
import time

import pytest

from contracts import BackupDue, BackupDuePayload
from tests.fixtures.rabbit import queue_count, queue_info, running, settings_for, spawn_worker, vhost, wait_for
from workers.app import App
from workers.middleware.base import Middleware
from workers.runtime.worker import WorkerSpec
from workers.runtime.publisher import Publisher
from workers.runtime.topology import Topology

pytestmark = pytest.mark.integration


def backup_due(set_id: str = "set-1") -> BackupDue:
    return BackupDue(source="test", stamp="stamp1", correlation_id=set_id,
                     payload=BackupDuePayload(backup_set_id=set_id))


def main_queue(settings, worker: str) -> str:
    return Topology.from_settings(settings.broker, settings.retry).queues(worker).main


def _wait_or_explain(proc: subprocess.Popen, predicate, what: str, timeout: float = 20) -> None:
    """wait_for, but a timeout shows what the worker process printed (and whether it is still alive)."""
    try:
        wait_for(predicate, timeout, what=what)
    except AssertionError as exc:
        state = "running" if proc.poll() is None else f"exited {proc.returncode}"
        raise AssertionError(f"{exc}; worker {state}; its output:\n{_stop(proc)[-4000:]}") from None


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.kill()
    out, _ = proc.communicate(timeout=30)
    return out


def test_worker_killed_mid_job_the_event_is_redelivered_to_another_process(settings, trace_dir):
    # Given a worker process busy with a 5 s job
    first = spawn_worker("tests.integration.sample_workers:slow", settings)
    second = None
    try:
        event = _job_running(first, settings, trace_dir)
        # When the process is killed with SIGKILL mid-job
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert not (trace_dir / f"{event.event_id}.done").exists()
        # Then another worker process gets the event and completes it
        second = spawn_worker("tests.integration.sample_workers:slow", settings)
        wait_for((trace_dir / f"{event.event_id}.done").exists, 30, what="redelivered job")
        assert (trace_dir / f"{event.event_id}.done").read_text() == str(second.pid)
        wait_for(lambda: queue_count(settings.broker.vhost, main_queue(settings, "slow")) == 0, 20,
                 what="ack of the redelivered job")
    finally:
        _stop(first)
        if second:
            second.send_signal(signal.SIGTERM)
            second.wait(30)


def _declared(settings, worker: str) -> bool:
    """The worker consumes from its queue (so its bindings exist: they are declared before consuming)."""
    try:
        return int(queue_info(settings.broker.vhost, main_queue(settings, worker)).get("consumers") or 0) > 0
    except Exception:  # noqa: BLE001 - 404 until the worker declared it
        return False


def _job_running(proc: subprocess.Popen, settings, trace_dir) -> BackupDue:
    """Once the worker process consumes, publish one event and wait until its job has started."""
    wait_for(lambda: _declared(settings, "slow"), 20, what="worker queue")
    event = backup_due()
    with Publisher(settings.broker) as pub:
        pub.publish(event)
    _wait_or_explain(proc, (trace_dir / f"{event.event_id}.started").exists, "job start")
    return event


def test_sigterm_lets_the_running_job_finish_and_exits_zero(settings, trace_dir):
    # Given a worker process busy with a 3 s job and a 10 s grace period
    proc = spawn_worker("tests.integration.sample_workers:slow", settings, APPSVC_DR_TEST_JOB_SECONDS="3")
    try:
        event = _job_running(proc, settings, trace_dir)
        # When SIGTERM arrives mid-job
        proc.send_signal(signal.SIGTERM)
        # Then the job finishes, is acked, and the process exits 0
        assert proc.wait(30) == 0, _stop(proc)
        assert (trace_dir / f"{event.event_id}.done").exists()
        assert queue_count(settings.broker.vhost, main_queue(settings, "slow")) == 0
    finally:
        _stop(proc)


def test_sigterm_past_the_grace_period_requeues_the_job_and_exits_zero(rabbit_vhost, trace_dir):
    # Given a 60 s job and a 1 s grace period
    settings = settings_for(rabbit_vhost, worker={"grace_period": 1})
    proc = spawn_worker("tests.integration.sample_workers:slow", settings, APPSVC_DR_TEST_JOB_SECONDS="60")
    try:
        event = _job_running(proc, settings, trace_dir)
        # When SIGTERM arrives
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        # Then the process exits 0 soon after the grace period and the event is back in the queue
        assert proc.wait(30) == 0, _stop(proc)
        assert time.monotonic() - started < 15
        assert not (trace_dir / f"{event.event_id}.done").exists()
        wait_for(lambda: queue_count(settings.broker.vhost, main_queue(settings, "slow")) == 1, 20,
                 what="requeued event")
    finally:
        _stop(proc)


class ConnectionLog(Middleware):
    def __init__(self) -> None:
        self.events: list[bool] = []

    def on_connection(self, worker: str, connected: bool) -> None:
        self.events.append(connected)


def test_job_longer_than_three_heartbeats_completes_on_an_intact_connection(rabbit_vhost):
    # Given a 1 s heartbeat and a job of 4.5 s
    settings = settings_for(rabbit_vhost, broker={"heartbeat": 1})
    done = threading.Event()

    def sleeper(deps):
        return WorkerSpec("sleeper", {BackupDue: lambda e, ctx: (time.sleep(4.5), done.set(), None)[-1]})

    connections = ConnectionLog()
    app = App(settings, [sleeper], middleware=[connections])
    with running(app):
        with Publisher(settings.broker) as pub:
            pub.publish(backup_due())
        # When the job runs past three heartbeat intervals
        assert done.wait(20)
        # Then it is acked on the same connection: never disconnected
        wait_for(lambda: queue_count(rabbit_vhost, main_queue(settings, "sleeper")) == 0, 15, what="ack")
        assert connections.events == [True]


@pytest.fixture
def private_vhost(private_rabbit):
    """A fresh vhost on this run's private node: the test below restarts that node, not the shared broker."""
    with vhost(private_rabbit.mgmt_url) as name:
        yield name


def test_broker_restart_while_1000_events_flow_loses_nothing(private_rabbit, private_vhost):
    # Given a consumer and a publisher of 1,000 events, on a broker node of this test run only
    settings = settings_for(private_vhost, broker={"port": private_rabbit.amqp_port},
                            worker={"prefetch": 50, "concurrency": 4})
    seen: set[str] = set()
    lock = threading.Lock()

    def counter(deps):
        def handle(event, ctx):
            with lock:
                seen.add(str(event.event_id))
        return WorkerSpec("counter", {BackupDue: handle}, concurrency=4)

    events = [backup_due(f"set-{i}") for i in range(1000)]
    published = threading.Event()

    def publish_all() -> None:
        with Publisher(settings.broker, retry_for=120) as pub:
            for event in events:
                pub.publish(event)
                time.sleep(0.004)
        published.set()

    app = App(settings, [counter])
    with running(app):
        thread = threading.Thread(target=publish_all, daemon=True)
        thread.start()
        wait_for(lambda: len(seen) >= 150, 30, what="first events")
        # When the broker restarts mid-stream
        private_rabbit.ctl("stop_app")
        time.sleep(1)
        private_rabbit.ctl("start_app")
        # Then publisher and consumer reconnect and every event is processed
        assert published.wait(180), "publisher did not finish"
        wait_for(lambda: len(seen) == 1000, 120, interval=0.5, what=f"all 1000 (have {len(seen)})")
    assert seen == {str(e.event_id) for e in events}
