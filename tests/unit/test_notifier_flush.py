"""The notifier's timer flush: suppressed repeats are summarised when their window closes, without waiting for
another failure (fake clock and fake sinks; one test runs the real flusher thread)."""
from __future__ import annotations

import time
from datetime import timedelta

from workers.notifier import FailureGrouper, GroupFlusher, NotifierHandler, build_notifier_worker
from workers.runtime.errors import PermanentError, TransientError
from workers.senders.settings import NotifySettings
from tests.fixtures.rabbit import wait_for
from tests.unit.test_notifier_handler import WINDOW, FakeClock, FakeSink, ctx, job_failed


def worker(*sinks: FakeSink, clock: FakeClock, window: float = WINDOW) -> tuple[NotifierHandler, GroupFlusher]:
    spec = build_notifier_worker(NotifySettings(group_window=window), list(sinks), clock,
                                 sleep=lambda seconds: None, flush_retry_delays=(30.0, 120.0))
    handler = spec.target
    assert isinstance(handler, NotifierHandler) and handler.flusher is not None
    assert spec.on_shutdown == handler.flusher.stop and handler.on_suppressed == handler.flusher.wake
    # These tests drive flush() themselves on a fake clock: a real flusher thread would race them (the last
    # test runs the real thread on the real clock)
    handler.on_suppressed = lambda: None
    return handler, handler.flusher


def repeated(handler: NotifierHandler, clock: FakeClock, times: int, every: float = 10.0) -> list:
    events = []
    for _ in range(times):
        clock.now += every
        events.append(job_failed())
        handler(events[-1], ctx())
    return events


def test_grouper_hands_out_one_summary_per_closed_window_with_repeats() -> None:
    # Given a failure sent at once and two repeats suppressed within the window
    clock = FakeClock()
    grouper = FailureGrouper(WINDOW, clock=clock)
    first = job_failed()
    grouper.observe(first)
    repeats = [job_failed(), job_failed()]
    for event in repeats:
        clock.now += 100
        grouper.observe(event)
    # When the window is still open, Then nothing is due yet, and next_due says when it will be
    assert grouper.due() == [] and grouper.next_due() == WINDOW - 200
    # When the window has closed
    clock.now += WINDOW
    [summary] = grouper.due()
    # Then one summary counts the suppressed repeats, from the first to the last of them
    assert (summary.count, summary.first, summary.last) == (2, repeats[0].occurred_at, repeats[1].occurred_at)
    assert summary.event is repeats[1] and summary.first_seen == first.occurred_at
    # And it is handed out once; a new window opened, so nothing waits any more
    assert grouper.due() == [] and grouper.next_due() is None
    # And a failure without repeats never produces a summary
    grouper.observe(job_failed(error_class="PermanentError"))
    clock.now += 2 * WINDOW
    assert grouper.due() == []


def test_window_closing_sends_the_summary_without_another_failure() -> None:
    # Given a notifier that sent a failure and suppressed three repeats
    clock, sink = FakeClock(), FakeSink("a")
    handler, flusher = worker(sink, clock=clock)
    handler(job_failed(), ctx())
    repeats = repeated(handler, clock, 3)
    assert len(sink.sent) == 1
    # When the flusher runs before the window closes, Then nothing is sent and it says when to look again
    assert flusher.flush() == WINDOW - 30 and len(sink.sent) == 1
    # When it runs after the window closed (no further failure arrived)
    clock.now += WINDOW
    assert flusher.flush() is None
    # Then one summary: "3 more identical failures of X between T1 and T2", with the fix
    summary = sink.sent[-1]
    assert len(sink.sent) == 2 and summary.repeat_count == 3
    assert (summary.first_seen, summary.last_seen) == (repeats[0].occurred_at, repeats[-1].occurred_at)
    assert summary.summary.startswith("ERROR: upload on stamp stamp1 — 3 more identical failures of artifact-ready "
                                      "(upload) between ")
    assert "How to fix: Check the S3 endpoint" in summary.summary and "3 more identical failures" in summary.title
    assert summary.to_dict()["last_seen"] == repeats[-1].occurred_at.isoformat()
    assert handler.stats["summaries"] == 1
    # And a failure repeating after the flush is grouped into the next window's summary, not sent on its own
    repeated(handler, clock, 1)
    assert len(sink.sent) == 2
    clock.now += WINDOW
    flusher.flush()
    assert len(sink.sent) == 3 and sink.sent[-1].repeat_count == 1 and "1 more identical failure of" in \
        sink.sent[-1].summary


def test_a_failure_after_the_window_reports_the_repeats_itself_and_nothing_is_sent_twice() -> None:
    # Given two suppressed repeats, and the next failure arriving after the window before the flusher ran
    clock, sink = FakeClock(), FakeSink("a")
    handler, flusher = worker(sink, clock=clock)
    handler(job_failed(), ctx())
    repeated(handler, clock, 2)
    clock.now += WINDOW
    handler(job_failed(), ctx())
    # Then that failure is sent with the repeat count, and the flusher has nothing left to report
    assert sink.sent[-1].repeat_count == 3 and sink.sent[-1].last_seen is None
    flusher.flush()
    assert len(sink.sent) == 2


def test_an_undelivered_summary_is_retried_later_only_where_it_is_missing() -> None:
    # Given sink b down for its in-process attempts when the window closes, sink a fine
    clock = FakeClock()
    down = TransientError("b: HTTP 503 Service Unavailable")
    a, b = FakeSink("a"), FakeSink("b")
    handler, flusher = worker(a, b, clock=clock)
    handler(job_failed(), ctx())
    repeated(handler, clock, 2)
    b.outcomes = [down, down, down]
    clock.now += WINDOW
    # When the flusher sends the summary
    wait = flusher.flush()
    # Then a has it, b does not yet, and the flusher will try b again after its retry delay
    assert [n.repeat_count for n in a.sent] == [0, 2] and len(b.sent) == 1 and wait == 30.0
    assert flusher.flush() == 30.0 and b.attempts == 4       # not before the delay
    clock.now += 30
    assert flusher.flush() is None
    # Then b got the summary once, and a was not sent it again
    assert [n.repeat_count for n in b.sent] == [0, 2] and len(a.sent) == 2


def test_a_summary_is_given_up_after_its_retries_or_a_permanent_refusal() -> None:
    # Given the only sink is down for good while a window with repeats closes
    clock, sink = FakeClock(), FakeSink("a")
    handler, flusher = worker(sink, clock=clock)
    handler(job_failed(), ctx())
    repeated(handler, clock, 1)
    sink.outcomes = [TransientError("a: timed out")] * 9
    clock.now += WINDOW
    # When the flusher has tried it after each of its retry delays (30 s, 120 s)
    for pause in (0, 30, 120):
        clock.now += pause
        last = flusher.flush()
    # Then it gives up (nothing waits) after three rounds of three in-process attempts
    assert last is None and sink.attempts == 1 + 9
    # And a permanent refusal is given up at once
    repeated(handler, clock, 1)
    sink.outcomes = [PermanentError("a: HTTP 404", hint="check notify.webhook_urls[0]")]
    clock.now += WINDOW
    assert flusher.flush() is None and sink.attempts == 11


def test_the_flusher_thread_sends_on_time_and_shutdown_sends_what_is_pending() -> None:
    # Given the real notifier worker with a real clock and a 0.3 s window
    sink = FakeSink("a")
    spec = build_notifier_worker(NotifySettings(group_window=0.3), [sink], sleep=lambda seconds: None)
    handler = spec.target
    assert isinstance(handler, NotifierHandler) and handler.flusher is not None
    # Then building it started no thread
    assert not handler.flusher.running
    # When a failure and two repeats arrive, and then nothing more
    for _ in range(3):
        handler(job_failed(), ctx())
    # Then the summary arrives by itself once the window has closed
    wait_for(lambda: len(sink.sent) == 2, 5, interval=0.02, what="timer flush")
    assert sink.sent[1].repeat_count == 2 and handler.flusher.running
    # When another repeat is suppressed and the worker shuts down before its window closes
    handler(job_failed(), ctx())
    started = time.monotonic()
    spec.on_shutdown()
    # Then the thread is stopped promptly and the pending repeat is still reported
    assert not handler.flusher.running and time.monotonic() - started < 2
    assert len(sink.sent) == 3 and sink.sent[2].repeat_count == 1
    assert sink.sent[2].last_seen - sink.sent[2].first_seen == timedelta(0)
    # And a second stop is harmless
    spec.on_shutdown()
