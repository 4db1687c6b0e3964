"""The notifier worker's handler and failure grouping, with fake sinks and a fake clock (no network)."""
from __future__ import annotations

import logging
import threading
from typing import Any
from uuid import uuid4

import pika
import pytest

from contracts import BackupDue, BackupDuePayload, JobFailed, JobFailedPayload, default_registry
from workers.notifier import FailureGrouper, NotifierHandler, build_notifier_worker
from workers.notifier.grouping import normalise
from workers.senders.render import Notification
from workers.runtime.errors import PermanentError, TransientError
from workers.runtime.worker import JobContext
from workers.runtime.processing import Delivery, JobProcessor
from workers.runtime.topology import Topology
from workers.senders.settings import NotifySettings

WINDOW = 900.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSink:
    """Records what it was sent; ``outcomes`` scripts the next sends (an exception to raise, or None)."""

    def __init__(self, name: str, *outcomes: Exception | None) -> None:
        self.name = name
        self.outcomes = list(outcomes)
        self.attempts = 0
        self.sent: list[Notification] = []

    def send(self, notification: Notification) -> None:
        self.attempts += 1
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        self.sent.append(notification)


def job_failed(message: str = "upload of 20261121T010000Z-3f2a9c1b/db1.bak failed after 3 tries", *,
               error_class: str = "TransientError", worker: str = "upload") -> JobFailed:
    return JobFailed(source=f"worker:{worker}", stamp="stamp1", correlation_id="20261121T010000Z-3f2a9c1b",
                     payload=JobFailedPayload(worker=worker, failed_event_id=uuid4(),
                                              failed_event_type="artifact-ready", error_class=error_class,
                                              message=message, attempts=5, will_retry=False,
                                              hint="Check the S3 endpoint is reachable (store.s3_endpoint)",
                                              dead_letter_queue="appsvc-dr.upload.dead"))


def ctx(job_key: str | None = None, attempt: int = 1) -> JobContext:
    return JobContext(worker="notifier", job_key=job_key or uuid4().hex, attempt=attempt,
                      logger=logging.LoggerAdapter(logging.getLogger("test.notifier"), {}))


def handler_for(*sinks: FakeSink, clock: FakeClock | None = None, **kwargs: Any) -> NotifierHandler:
    spec = build_notifier_worker(NotifySettings(group_window=WINDOW), list(sinks), clock or FakeClock(),
                                 retry_delays=kwargs.pop("retry_delays", (0.5, 2.0)),
                                 sleep=kwargs.pop("sleep", lambda seconds: None))
    handler = spec.target
    assert isinstance(handler, NotifierHandler)
    handler.on_suppressed = lambda: None  # no flusher thread racing the fake clock (test_notifier_flush has it)
    return handler


# --- grouping ----------------------------------------------------------------------------------------------

def test_identical_failures_are_grouped_within_the_window() -> None:
    # Given a grouper with a 900 s window
    clock = FakeClock()
    grouper = FailureGrouper(WINDOW, clock=clock)
    first = job_failed()
    # When the same failure (other ids and numbers) happens three times inside the window
    decisions = [grouper.observe(first)]
    for seconds in (10, 500):
        clock.now += seconds
        decisions.append(grouper.observe(job_failed("upload of 20261122T020000Z-77aa88bb/db2.bak failed "
                                                    "after 4 tries")))
    # Then only the first is sent; the others are suppressed and counted
    assert [d.send for d in decisions] == [True, False, False]
    assert grouper.suppressed == 2
    # When it happens again after the window
    clock.now += WINDOW
    later = grouper.observe(job_failed())
    # Then it is sent, saying how often it repeated since the first one
    assert later.send and later.repeat_count == 3 and later.first_seen == first.occurred_at
    # And a new window starts
    clock.now += 1
    assert not grouper.observe(job_failed()).send


def test_different_failures_are_not_grouped() -> None:
    # Given one failure already sent
    grouper = FailureGrouper(WINDOW, clock=FakeClock())
    assert grouper.observe(job_failed()).send
    # When failures differ in error class, worker or wording, Then each is sent
    assert grouper.observe(job_failed(error_class="PermanentError")).send
    assert grouper.observe(job_failed(worker="db-backup")).send
    assert grouper.observe(job_failed("S3 bucket appservice-dr does not exist")).send


def test_normalise_blanks_ids_and_numbers() -> None:
    # Given messages that differ only by uuid, backup-set id and counts, Then they normalise the same
    a = normalise(f"event {uuid4()} of 20261121T010000Z-3f2a9c1b failed after 3 tries (1.5 GiB)")
    b = normalise(f"event {uuid4()} of 20261122T230000Z-0badc0de failed after 12 tries (20.25 GiB)")
    assert a == b and "failed after <n> tries" in a


def test_window_zero_sends_everything_and_old_groups_are_forgotten() -> None:
    # Given a grouper without a window, Then every failure is sent
    no_window = FailureGrouper(0, clock=FakeClock())
    assert all(no_window.observe(job_failed()).send for _ in range(3))
    # Given a group not seen for longer than forget_after, Then the next failure counts as new
    clock = FakeClock()
    grouper = FailureGrouper(60, clock=clock, forget_after=3600)
    grouper.observe(job_failed())
    clock.now += 3601
    assert grouper.observe(job_failed()).repeat_count == 0


def test_grouping_is_thread_safe() -> None:
    # Given many threads reporting the same failure at the same moment
    grouper = FailureGrouper(WINDOW, clock=FakeClock())
    decisions: list[bool] = []
    start = threading.Barrier(16)

    def report() -> None:
        start.wait()
        for _ in range(50):
            decisions.append(grouper.observe(job_failed()).send)

    threads = [threading.Thread(target=report) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then exactly one is sent and every other one is counted
    assert decisions.count(True) == 1 and grouper.suppressed == 16 * 50 - 1


# --- handler -----------------------------------------------------------------------------------------------

def test_worker_spec() -> None:
    # Given the notifier worker built from settings without sinks
    spec = build_notifier_worker(NotifySettings())
    # Then it is the "notifier" worker consuming job-failed, with no sinks
    assert spec.name == "notifier" and spec.event_types == ["job-failed"]
    assert spec.target.notifiers == []  # type: ignore[attr-defined]


def test_handler_delivers_to_every_sink() -> None:
    # Given two sinks
    a, b = FakeSink("a"), FakeSink("b")
    handler = handler_for(a, b)
    event = job_failed()
    # When a job-failed event is handled
    result = handler(event, ctx())
    # Then both sinks got the same notification, and there are no follow-up events
    assert result is None
    assert [n.event_id for n in a.sent + b.sent] == [str(event.event_id)] * 2
    assert handler.stats["delivered"] == 2


def test_handler_suppresses_repeats_and_reports_them_after_the_window() -> None:
    # Given a handler that already notified one failure
    clock, sink = FakeClock(), FakeSink("a")
    handler = handler_for(sink, clock=clock)
    handler(job_failed(), ctx())
    # When the same failure arrives twice more within the window, Then nothing more is sent
    handler(job_failed(), ctx())
    handler(job_failed(), ctx())
    assert len(sink.sent) == 1 and handler.stats["suppressed"] == 2
    # When it arrives after the window, Then it is sent with the repeat count
    clock.now += WINDOW + 1
    handler(job_failed(), ctx())
    assert sink.sent[-1].repeat_count == 3 and "Repeated 3 times since" in sink.sent[-1].summary


def test_transient_sink_failure_is_retried_in_process_then_by_the_runtime_without_resending() -> None:
    # Given sink "a" that works and sink "b" that is down for its three in-process attempts
    down = TransientError("b: HTTP 503 Service Unavailable")
    a, b = FakeSink("a"), FakeSink("b", down, down, down)
    pauses: list[float] = []
    handler = handler_for(a, b, sleep=pauses.append)
    event, key = job_failed(), uuid4().hex
    # When the event is handled
    with pytest.raises(TransientError) as caught:
        handler(event, ctx(key))
    # Then b was tried three times with the backoff, and the error names b (not a) for the runtime to retry
    assert b.attempts == 3 and pauses == [0.5, 2.0]
    assert "not delivered to b" in caught.value.message and "not delivered to a" not in caught.value.message
    assert len(a.sent) == 1
    # When the runtime retries the same job (b is back)
    handler(event, ctx(key, attempt=2))
    # Then only b is sent it now; a is not sent it again and grouping did not swallow the retry
    assert len(a.sent) == 1 and len(b.sent) == 1 and a.attempts == 1
    assert handler.stats["suppressed"] == 0
    # When the same job is redelivered once more (say an ack was lost), Then nobody gets it twice
    handler(event, ctx(key, attempt=3))
    assert (a.attempts, len(b.sent)) == (1, 1)


def test_transient_failure_that_clears_in_process_is_not_raised() -> None:
    # Given a sink that fails once, then works
    sink = FakeSink("a", TransientError("a: timed out"))
    handler = handler_for(sink)
    # When the event is handled, Then the second in-process attempt delivers it
    assert handler(job_failed(), ctx()) is None
    assert sink.attempts == 2 and len(sink.sent) == 1 and handler.stats["retried"] == 1


def test_permanent_sink_failure_does_not_block_the_others() -> None:
    # Given one broken sink and one working sink
    broken = FakeSink("broken", PermanentError("broken: HTTP 404", hint="check notify.teams_urls[0]"))
    ok = FakeSink("ok")
    handler = handler_for(broken, ok)
    # When the event is handled, Then it is acked after delivering to the working sink (no retry of 404)
    assert handler(job_failed(), ctx()) is None
    assert broken.attempts == 1 and len(ok.sent) == 1 and handler.stats["failed_permanent"] == 1


def test_all_sinks_failing_permanently_is_permanent() -> None:
    # Given two sinks that both fail permanently (one of them with a bug)
    a = FakeSink("a", PermanentError("a: HTTP 401", hint="check notify.webhook_urls[0]"))
    b = FakeSink("b", RuntimeError("bug"))
    handler = handler_for(a, b)
    # When the event is handled, Then it is a PermanentError naming both, with the sink's hint
    with pytest.raises(PermanentError) as caught:
        handler(job_failed(), ctx())
    assert "a: HTTP 401" in caught.value.message and "b: unexpected RuntimeError" in caught.value.message
    assert "notify.webhook_urls[0]" in caught.value.hint


def test_no_sinks_acks_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    # Given a handler without sinks
    handler = handler_for()
    # When two events are handled
    with caplog.at_level(logging.WARNING):
        results = [handler(job_failed(), ctx()), handler(job_failed(), ctx())]
    # Then both are acked and the warning is logged once
    assert results == [None, None]
    assert sum("no notification sinks" in r.getMessage() for r in caplog.records) == 1


def test_other_event_types_are_refused() -> None:
    # Given a backup-due event routed to the notifier by mistake
    event = BackupDue(source="cli", stamp="stamp1", correlation_id="set1",
                      payload=BackupDuePayload(backup_set_id="set1"))
    sink = FakeSink("a")
    spec = build_notifier_worker(NotifySettings(group_window=WINDOW), [sink], FakeClock())
    processor = JobProcessor(spec, default_registry(), Topology("ex", "dr", (30.0,), 20), crash_limit=5)
    # When the runtime processes it, Then it is dead-lettered at once (a wrong binding never fixes itself)
    outcome = processor.process(Delivery(event.to_json(), "backup-due", "ex",
                                         pika.BasicProperties(type="backup-due", message_id=str(event.event_id))))
    assert outcome.kind == "rejected" and outcome.messages[0].properties.headers["x-dr-reason"] == "no-handler"
    # And no sink was called
    assert sink.attempts == 0
