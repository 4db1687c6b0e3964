"""Timer flush of grouped failures: when a group's window closes with suppressed repeats, one summary is sent
("N more identical failures of X between T1 and T2") without waiting for another failure.

It lives inside the runtime model without touching it: the notifier is one replica and its handler runs on
job threads, so the flusher is one small daemon thread owned by the notifier's WorkerSpec. It starts when the
first failure is suppressed (building the worker starts nothing), sleeps until the next window closes
(:meth:`FailureGrouper.next_due`) or it is woken, and stops through ``WorkerSpec.on_shutdown``: the thread is
joined, then the repeats still pending are sent at once (one attempt per sink), because grouping is in memory
and would otherwise be lost with the process.

Delivery is the handler's own (every sink, in-process retries with the same short backoff, secrets never in
a notification). There is no message to hand back to the broker, so a summary a sink could not take is kept
and retried by the flusher after ``retry_delays`` (like the runtime's backoff), sinks that already got it are
not sent it again, and it is given up with an error log once the delays are used up or a sink refuses it
permanently.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from workers.notifier.grouping import FailureGrouper, GroupSummary
from workers.notifier.journal import PendingJournal
from workers.runtime.errors import PermanentError, TransientError
from workers.runtime.worker import JobContext
from workers.runtime.logs import worker_context

log = logging.getLogger(__name__)

FLUSH_RETRY_DELAYS = (30.0, 120.0, 600.0, 3600.0)
"""Pauses before the flusher tries an undelivered summary again (then it is given up)."""
MAX_WAIT = 60.0
"""Longest sleep of the flusher thread between checks."""


@dataclass
class _Summary:
    ident: int
    state: Any                 # the handler's delivery state (notification + sinks already done)
    summary: GroupSummary
    attempts: int = 0
    next_at: float = 0.0


class GroupFlusher:
    """Sends grouping summaries when their window closes; thread-safe; ``stop`` is idempotent."""

    def __init__(self, grouper: FailureGrouper, summary_delivery: Callable[[GroupSummary], Any],
                 deliver: Callable[[Any, JobContext], None], *, clock: Callable[[], float] = time.monotonic,
                 retry_delays: Sequence[float] = FLUSH_RETRY_DELAYS, max_wait: float = MAX_WAIT,
                 worker: str = "notifier", journal: PendingJournal | None = None) -> None:
        # what it needs of the handler, as callables (the flusher never imports the handler): the grouper, a fresh
        # delivery state for a summary, and delivering such a state
        self.grouper, self._summary_delivery, self._deliver = grouper, summary_delivery, deliver
        self.worker, self.journal = worker, journal
        self.retry_delays, self.max_wait = tuple(retry_delays), max_wait
        self._clock = clock
        self._queue: list[_Summary] = []
        self._ids = itertools.count(1)
        self._stop, self._wake = threading.Event(), threading.Event()
        self._lock = threading.Lock()        # one flush at a time (the thread, or stop's final flush)
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._logger = logging.LoggerAdapter(log, {})

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """The worker starts (WorkerSpec.on_start): queue what a previous run left pending, and send it."""
        recovered = self.journal.load() if self.journal is not None else []
        if not recovered:
            return
        self._logger.info("%d grouped failure summary(ies) left pending by a previous run: sending them",
                          len(recovered))
        for summary in recovered:
            self._queue.append(_Summary(next(self._ids), self._summary_delivery(summary), summary))
        self.wake()

    def persist(self) -> None:
        """Write what is pending (suppressed repeats and undelivered summaries) to the journal, if any."""
        if self.journal is not None:
            self.journal.save([*self.grouper.peek(), *(item.summary for item in list(self._queue))])

    def wake(self) -> None:
        """A failure was suppressed: make sure the thread runs and recomputes when to flush."""
        self.persist()
        with self._start_lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name=f"{self.worker}-group-flush", daemon=True)
                self._thread.start()
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread, then send what is still pending once (WorkerSpec.on_shutdown)."""
        self._stop.set()
        self._wake.set()
        with self._start_lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        try:
            self.flush(final=True)
        except Exception:  # noqa: BLE001 - shutdown must go on
            log.exception("final flush of grouped notifications failed")

    def flush(self, final: bool = False) -> float | None:
        """Send the summaries that are due (all pending ones when ``final``) and retry undelivered ones whose
        pause is over. Returns the seconds until something is due next, None when nothing waits."""
        with self._lock:
            for summary in self.grouper.due(force=final):
                self._logger.info("%d identical failure(s) of %s (%s) were suppressed between %s and %s: sending a "
                                  "summary", summary.count, summary.event.payload.failed_event_type or "?",
                                  summary.event.payload.worker, summary.first, summary.last)
                self._queue.append(_Summary(next(self._ids), self._summary_delivery(summary), summary))
            now = self._clock()
            for item in list(self._queue):
                if final or item.next_at <= now:
                    self._attempt(item, now, final)
            self.persist()
            waits = [item.next_at - now for item in self._queue]
            due = self.grouper.next_due()
            if due is not None:
                waits.append(due)
            return max(min(waits), 0.0) if waits else None

    def _attempt(self, item: _Summary, now: float, final: bool) -> None:
        ctx = JobContext(worker=self.worker, job_key=f"group-summary-{item.ident}", attempt=item.attempts,
                         logger=self._logger, cancelled=self._stop)
        what = f"grouping summary {item.ident} ({item.state.notification.what_failed})"
        try:
            self._deliver(item.state, ctx)
        except TransientError as exc:
            item.attempts += 1
            if final and self.journal is not None:
                self._logger.warning("%s not delivered at shutdown (%s): kept in %s for the next start", what,
                                     exc.message, self.journal.path)
                return
            if final or item.attempts > len(self.retry_delays):
                self._queue.remove(item)
                self._logger.error("%s given up after %d attempt(s): %s", what, item.attempts, exc.message)
                return
            pause = max(self.retry_delays[item.attempts - 1], exc.delay or 0.0)
            item.next_at = now + pause
            self._logger.warning("%s not delivered yet (%s); retrying in %g s", what, exc.message, pause)
            return
        except PermanentError as exc:
            self._logger.error("%s not delivered: %s (how to fix: %s)", what, exc.message, exc.hint)
        except Exception:  # noqa: BLE001 - a bug must not kill the flusher
            self._logger.exception("%s failed unexpectedly", what)
        self._queue.remove(item)

    def _run(self) -> None:
        with worker_context(self.worker):
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    delay = self.flush()
                except Exception:  # noqa: BLE001 - keep flushing later
                    log.exception("flushing grouped notifications failed")
                    delay = self.max_wait
                self._wake.wait(self.max_wait if delay is None else min(max(delay, 0.05), self.max_wait))
