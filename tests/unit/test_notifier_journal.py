"""NOTIFY__PENDING_FILE: suppressed repeats and undelivered summaries survive a crash or a shutdown with the sinks
down, and a restarted notifier sends them (fake sinks and clock; the real file system and flusher thread)."""
from __future__ import annotations

import json
import logging

from tests.fixtures.rabbit import wait_for
from tests.unit.test_notifier_flush import repeated
from tests.unit.test_notifier_handler import WINDOW, FakeClock, FakeSink, job_failed
from workers.notifier import NotifierHandler, build_notifier_worker
from workers.notifier.grouping import GroupSummary
from workers.notifier.journal import PendingJournal
from workers.runtime.errors import TransientError
from workers.senders.settings import NotifySettings


def notifier(path, *sinks: FakeSink, clock: FakeClock):
    spec = build_notifier_worker(NotifySettings(group_window=WINDOW, pending_file=path), list(sinks), clock,
                                 sleep=lambda seconds: None, flush_retry_delays=(30.0,))
    handler = spec.target
    assert isinstance(handler, NotifierHandler) and handler.flusher is not None
    assert spec.on_start == handler.flusher.start
    handler.on_suppressed = handler.flusher.persist     # journal it, but let the test decide when to flush
    return spec, handler


def pending(path) -> list[tuple[int, str]]:
    return [(s.count, s.event.payload.message) for s in PendingJournal(path).load()]


def restarted(path):
    """Start a new notifier on ``path`` with a healthy sink; the one notification its start sends."""
    fresh = FakeSink("hook")
    spec, handler = notifier(path, fresh, clock=FakeClock())
    spec.on_start()
    try:
        wait_for(lambda: fresh.sent, 10, what="the summary left pending")
    finally:
        handler.flusher.stop()
    [summary] = fresh.sent
    return summary


def test_repeats_suppressed_before_a_crash_are_reported_after_the_restart(tmp_path):
    # Given a notifier that sent a failure and suppressed two identical repeats
    path, clock, sink = tmp_path / "state" / "pending.json", FakeClock(), FakeSink("hook")
    _, handler = notifier(path, sink, clock=clock)
    repeated(handler, clock, 3)
    assert len(sink.sent) == 1 and pending(path) == [(2, job_failed().payload.message)]
    # When the process dies without its shutdown flush, and a new notifier starts with the same file
    # Then the new one sends the summary of the two repeats, and nothing is pending any more
    summary = restarted(path)
    assert summary.repeat_count == 2 and summary.last_seen is not None
    assert pending(path) == []


def test_a_summary_the_sinks_refuse_at_shutdown_is_kept_for_the_next_start(tmp_path):
    # Given two suppressed repeats, and a sink that is down when the notifier stops
    path, clock, sink = tmp_path / "pending.json", FakeClock(), FakeSink("hook")
    _, handler = notifier(path, sink, clock=clock)
    repeated(handler, clock, 3)
    sink.outcomes = [TransientError("connection refused")] * 3
    # When the notifier shuts down (its final flush fails)
    handler.flusher.stop()
    # Then the summary is still in the file, and the next start delivers it
    assert pending(path) == [(2, job_failed().payload.message)]
    assert restarted(path).repeat_count == 2 and pending(path) == []


def test_the_file_round_trips_and_a_damaged_one_is_moved_aside(tmp_path, caplog):
    path = tmp_path / "pending.json"
    event = job_failed()
    summary = GroupSummary(event=event, count=3, first=event.occurred_at, last=event.occurred_at,
                           first_seen=event.occurred_at)
    journal = PendingJournal(path)
    journal.save([summary])
    assert journal.load() == [summary] and json.loads(path.read_text())["format"] == 1
    path.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert PendingJournal(path).load() == []
    assert (tmp_path / "pending.json.unreadable").read_text() == "{not json" and not path.exists()
    assert "moved to" in caplog.text


def test_an_unwritable_file_is_a_warning_not_a_failure(tmp_path, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    journal = PendingJournal(blocker / "pending.json")
    event = job_failed()
    with caplog.at_level(logging.WARNING):
        journal.save([GroupSummary(event=event, count=1, first=event.occurred_at, last=event.occurred_at,
                                   first_seen=event.occurred_at)])
        journal.save([])
    assert caplog.text.count("cannot write the pending notifications") == 1


def test_without_a_pending_file_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clock, sink = FakeClock(), FakeSink("hook")
    spec = build_notifier_worker(NotifySettings(group_window=WINDOW), [sink], clock,
                                 sleep=lambda seconds: None)
    handler = spec.target
    handler.on_suppressed = handler.flusher.persist
    repeated(handler, clock, 3)
    spec.on_start()
    assert handler.flusher.journal is None and list(tmp_path.iterdir()) == []
