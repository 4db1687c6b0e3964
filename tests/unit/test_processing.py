"""The runtime's decisions without a broker: what is published, retried or dead-lettered, and why."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pika

from contracts import BackupDue, BackupDuePayload, JobFailed, JobFailedPayload, default_registry
from workers.middleware.base import Hooks, Middleware
from workers.middleware.metrics import Metrics, MetricsMiddleware
from workers.runtime.errors import DuplicateJob, PermanentError, TransientError
from workers.runtime.worker import WorkerSpec
from workers.runtime.processing import Delivery, JobProcessor
from workers.runtime.topology import Topology

TOPOLOGY = Topology("ex", "dr", (30.0, 120.0), 20)


def event() -> BackupDue:
    return BackupDue(source="t", stamp="stamp1", correlation_id="set-1", payload=BackupDuePayload(backup_set_id="set-1"))


def delivery(body: bytes, **headers) -> Delivery:
    return Delivery(body, "backup-due", "ex", pika.BasicProperties(message_id="m", type="backup-due",
                                                                    headers=headers or None))


def processor(handler, name="w", crash_limit=5, hooks=None) -> JobProcessor:
    return JobProcessor(WorkerSpec(name, {BackupDue: handler}), default_registry(), TOPOLOGY, crash_limit,
                        hooks)


def test_success_publishes_follow_ups_to_the_exchange():
    e = event()
    follow = e.follow_up(BackupDue, BackupDuePayload(backup_set_id="set-1"), source="w")
    out = processor(lambda ev, ctx: [follow]).process(delivery(e.to_json()))
    assert out.kind == "ok"
    [msg] = out.messages
    assert (msg.exchange, msg.routing_key, msg.kind) == ("ex", "backup-due", "event")
    assert msg.properties.delivery_mode == 2 and msg.properties.message_id == str(follow.event_id)


def test_job_key_is_stable_across_attempts():
    keys = []
    p = processor(lambda ev, ctx: keys.append((ctx.job_key, ctx.attempt)))
    body = event().to_json()
    p.process(delivery(body))
    p.process(delivery(body, **{"x-dr-attempt": 2}))
    assert keys[0][0] == keys[1][0] and [a for _, a in keys] == [0, 2]


def test_a_duplicate_job_is_acked_without_follow_ups_and_counted():
    # Given a handler that finds its job already running for another event
    def duplicate(ev, ctx):
        raise DuplicateJob("job stamp1/set-1/databases/orders.dump already runs for another event")
    metrics = Metrics()
    p = processor(duplicate, hooks=Hooks([MetricsMiddleware(metrics)]))
    # When the event is processed
    out = p.process(delivery(event().to_json()))
    # Then it is acked (no retry, no dead letter, nothing published) and counted as a duplicate
    assert out.kind == "duplicate" and out.messages == [] and "already runs" in out.error
    assert metrics.consumed.labels("w", "backup-due", "duplicate")._value.get() == 1
    assert metrics.dead_letters.labels("w", "backup-due", "permanent")._value.get() == 0


def test_transient_errors_walk_the_backoff_then_dead_letter_with_job_failed():
    def boom(ev, ctx):
        raise TransientError("S3 timed out")
    p, body = processor(boom), event().to_json()
    first = p.process(delivery(body))
    assert first.kind == "retried" and first.messages[0].routing_key == "dr.w.retry.30s"
    assert first.messages[0].properties.headers["x-dr-attempt"] == 1
    second = p.process(delivery(body, **{"x-dr-attempt": 1}))
    assert second.messages[0].routing_key == "dr.w.retry.120s"
    last = p.process(delivery(body, **{"x-dr-attempt": 2}))
    assert last.kind == "dead_lettered"
    dead, failed = last.messages
    assert dead.routing_key == "dr.w.dlq" and dead.properties.headers["x-dr-reason"] == "retries-exhausted"
    job_failed = default_registry().decode(failed.body)
    assert isinstance(job_failed, JobFailed) and job_failed.payload.attempts == 3
    assert job_failed.payload.will_retry is False and job_failed.payload.dead_letter_queue == "dr.w.dlq"


def test_permanent_error_dead_letters_at_once_with_reason_and_hint():
    def denied(ev, ctx):
        raise PermanentError("bucket access denied", hint="grant s3:PutObject")
    out = processor(denied).process(delivery(event().to_json()))
    headers = out.messages[0].properties.headers
    assert out.kind == "dead_lettered"
    assert (headers["x-dr-reason"], headers["x-dr-error"], headers["x-dr-hint"]) == \
        ("permanent", "bucket access denied", "grant s3:PutObject")
    assert headers["x-dr-original-routing-key"] == "backup-due"
    failed = default_registry().decode(out.messages[1].body)
    assert failed.payload.hint == "grant s3:PutObject" and failed.causation_id == failed.payload.failed_event_id


def test_a_requested_delay_picks_a_long_enough_backoff_step():
    def busy(ev, ctx):
        raise TransientError("throttled", delay=60)
    assert processor(busy).process(delivery(event().to_json())).messages[0].routing_key == "dr.w.retry.120s"


def _waiting(until):
    def handler(ev, ctx):
        raise TransientError("the plan is not there yet", until=until)
    return handler


def test_an_error_with_a_future_until_is_retried_past_the_backoff_at_its_last_step():
    # Given a handler that will wait for something until an hour from now, and a two-step backoff
    p, body = processor(_waiting(datetime.now(timezone.utc) + timedelta(hours=1))), event().to_json()
    # When it fails on its first attempts, then long after the backoff list is used up (and redelivered since)
    first = p.process(delivery(body))
    later = [p.process(delivery(body, **{"x-dr-attempt": n, "x-delivery-count": 0})) for n in (2, 3, 50)]
    # Then the first walks the backoff as usual, the later ones keep retrying at its last (longest) step
    assert first.messages[0].routing_key == "dr.w.retry.30s"
    assert [o.kind for o in later] == ["retried"] * 3
    assert [o.messages[0].routing_key for o in later] == ["dr.w.retry.120s"] * 3
    assert [o.messages[0].properties.headers["x-dr-attempt"] for o in later] == [3, 4, 51]
    # And a retry never carries a broker delivery count along (the crash-loop check starts afresh)
    assert all("x-delivery-count" not in o.messages[0].properties.headers for o in later)


def test_an_error_whose_until_has_passed_or_without_until_dead_letters_when_the_backoff_runs_out():
    body = event().to_json()
    # Given handlers failing with an until in the past, a naive past until, and no until at all
    for handler in (_waiting(datetime.now(timezone.utc) - timedelta(seconds=1)),
                    _waiting(datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=5)),
                    _waiting(None)):
        p = processor(handler)
        # When they fail within the backoff, Then they are retried as before
        assert p.process(delivery(body, **{"x-dr-attempt": 1})).kind == "retried"
        # And once it is used up they are dead-lettered as retries-exhausted
        out = p.process(delivery(body, **{"x-dr-attempt": 2}))
        assert out.kind == "dead_lettered"
        assert out.messages[0].properties.headers["x-dr-reason"] == "retries-exhausted"


def test_garbage_is_rejected_with_the_reason_and_a_job_failed_without_event_id():
    out = processor(lambda ev, ctx: None).process(delivery(b"\xff\x00"))
    assert out.kind == "rejected"
    assert out.messages[0].properties.headers["x-dr-reason"] == "not-json"
    failed = default_registry().decode(out.messages[1].body)
    assert failed.payload.failed_event_id is None and failed.stamp == "unknown"


def test_crash_loop_is_dead_lettered_without_running_the_handler():
    ran = []
    out = processor(lambda ev, ctx: ran.append(1), crash_limit=3).process(
        delivery(event().to_json(), **{"x-delivery-count": 3}))
    assert ran == [] and out.kind == "dead_lettered"
    assert out.messages[0].properties.headers["x-dr-reason"] == "crash-loop"
    assert "appsvc-dr dlq replay w" in out.messages[0].properties.headers["x-dr-hint"]


def test_failed_notifications_do_not_notify_about_themselves():
    failed = JobFailed(source="t", stamp="s", correlation_id="c", payload=JobFailedPayload(
        worker="x", failed_event_id=None, failed_event_type=None, error_class="E", message="m", attempts=1,
        will_retry=False, hint="h"))

    def sinks_down(ev, ctx):
        raise PermanentError("all sinks refused")
    p = JobProcessor(WorkerSpec("notifier", {JobFailed: sinks_down}), default_registry(), TOPOLOGY, 5)
    out = p.process(Delivery(failed.to_json(), "job-failed", "ex", pika.BasicProperties()))
    assert [m.kind for m in out.messages] == ["dead-letter"]


def test_old_failure_headers_are_replaced_not_accumulated():
    def denied(ev, ctx):
        raise PermanentError("second")
    out = processor(denied).process(delivery(event().to_json(), **{"x-dr-error": "first", "x-death": [{}]}))
    headers = out.messages[0].properties.headers
    assert headers["x-dr-error"] == "second" and "x-death" not in headers


class Failing(Middleware):
    def before_job(self, worker, event_type):
        raise RuntimeError("metrics backend down")


def test_a_failing_middleware_hook_never_breaks_the_job():
    out = processor(lambda ev, ctx: None, hooks=Hooks([Failing()])).process(delivery(event().to_json()))
    assert out.kind == "ok"


def test_unexpected_exceptions_are_retried_and_handlers_returning_junk_are_caught():
    out = processor(lambda ev, ctx: ["not an event"]).process(delivery(event().to_json()))
    assert out.kind == "retried" and "TypeError" in out.error
    assert json.loads(out.messages[0].body)["type"] == "backup-due"


def test_over_deep_json_is_rejected_on_the_first_delivery_with_the_reason():
    # Given a 10,000-deep JSON body on its first delivery
    ran = []
    out = processor(lambda ev, ctx: ran.append(1)).process(delivery(b"[" * 10_000 + b"]" * 10_000))
    # Then it is rejected (dead-lettered as malformed) at once, without running the handler
    assert out.kind == "rejected" and not ran
    assert out.messages[0].routing_key == "dr.w.dlq"
    assert out.messages[0].properties.headers["x-dr-reason"] == "too-deep"


def test_a_recursion_error_in_the_handler_is_dead_lettered_not_retried():
    # Given a handler that hits Python's recursion limit on an event's data
    def deep(ev, ctx):
        raise RecursionError("maximum recursion depth exceeded")
    # When it runs
    out = processor(deep).process(delivery(event().to_json()))
    # Then the event is dead-lettered at once (a retry would fail the same way), with job-failed
    assert out.kind == "dead_lettered" and [m.kind for m in out.messages] == ["dead-letter", "job-failed"]
    assert out.messages[0].properties.headers["x-dr-reason"] == "too-deep"
