"""The notifier worker: turns ``job-failed`` events into notifications on every configured sink.

Delivery is per sink. A sink's transient failure is retried a few times in-process with a short backoff; if a
sink still fails, the handler raises TransientError naming it, so the runtime retries the event later with its
own backoff. What each sink already received is remembered per ``ctx.job_key`` (a bounded in-memory LRU), so
that retry goes only to the sinks that missed it and does not pass through grouping again. A sink that fails
permanently is logged and skipped; only when every sink failed permanently is the event itself a
PermanentError. Identical failures within ``group_window`` are grouped (see :mod:`workers.notifier.grouping`);
repeats suppressed in a window are summarised when it closes by the worker's
:class:`~workers.notifier.flusher.GroupFlusher` thread, which is stopped by ``WorkerSpec.on_shutdown``; with
``NOTIFY__PENDING_FILE`` set, what is still pending survives a crash (:mod:`workers.notifier.journal`).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Sequence

from contracts import JobFailed
from workers.notifier.flusher import FLUSH_RETRY_DELAYS, GroupFlusher
from workers.notifier.grouping import FailureGrouper, GroupSummary
from workers.notifier.journal import PendingJournal
from workers.senders.base import Notifier
from workers.senders.factory import build_notifiers
from workers.senders.render import Notification, grouped_notification, notification_from_event
from workers.runtime.errors import PermanentError, TransientError
from workers.runtime.worker import JobContext, WorkerSpec
from workers.senders.settings import NotifySettings

log = logging.getLogger(__name__)

WORKER_NAME = "notifier"
DEFAULT_RETRY_DELAYS = (0.5, 2.0)
"""Pauses between in-process attempts of one sink: three attempts in all."""
STAT_KEYS = ("received", "suppressed", "summaries", "delivered", "retried", "failed_transient",
             "failed_permanent", "no_sinks")


@dataclass
class _Delivery:
    """What happened so far to one job-failed event (one job key)."""

    notification: Notification | None  # None: suppressed by grouping, nothing to send
    delivered: set[int] = field(default_factory=set)
    failed_permanently: dict[int, PermanentError] = field(default_factory=dict)


class NotifierHandler:
    """The ``job-failed`` handler. ``stats`` holds monotonically growing counters for metrics."""

    def __init__(self, notifiers: Sequence[Notifier], grouper: FailureGrouper, *,
                 retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
                 sleep: Callable[[float], None] | None = None, remember: int = 1024,
                 observe: Callable[[str, str], None] | None = None) -> None:
        self.notifiers = list(notifiers)
        self.observe = observe or (lambda sink, outcome: None)  # (sink name, sent|grouped|failed) for metrics
        self.grouper = grouper
        self.retry_delays = tuple(retry_delays)
        self._sleep = sleep
        self._remember = remember
        self._jobs: OrderedDict[str, _Delivery] = OrderedDict()
        self._lock = threading.Lock()
        self._warned_no_sinks = False
        self.flusher: GroupFlusher | None = None                # set by build_notifier_worker
        self.on_suppressed: Callable[[], None] = lambda: None   # wakes the flusher
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def __call__(self, event: JobFailed, ctx: JobContext) -> None:
        self._count("received")
        if not self.notifiers:
            self._count("no_sinks")
            with self._lock:
                warn, self._warned_no_sinks = not self._warned_no_sinks, True
            if warn:
                log.warning("no notification sinks configured (notify.webhook_urls, notify.teams_urls, "
                            "notify.slack_urls, notify.smtp_host): job-failed events are acknowledged unsent")
            return None
        state = self._state(event, ctx)
        if state.notification is None:
            return None
        self.deliver(state, ctx)
        return None

    def _state(self, event: JobFailed, ctx: JobContext) -> _Delivery:
        """The remembered delivery state of this job, or a new one after passing the event through grouping."""
        with self._lock:
            state = self._jobs.get(ctx.job_key)
            if state is not None:
                self._jobs.move_to_end(ctx.job_key)
                return state
        decision = self.grouper.observe(event)
        if decision.send:
            state = _Delivery(notification_from_event(event, repeat_count=decision.repeat_count,
                                                      first_seen=decision.first_seen))
        else:
            self._count("suppressed")
            self.observe("*", "grouped")
            ctx.logger.info("suppressed repeated failure of %s (%d repeats since %s)", event.payload.worker,
                            decision.repeat_count, decision.first_seen)
            state = _Delivery(None)
            self.on_suppressed()
        with self._lock:
            self._jobs[ctx.job_key] = state
            while len(self._jobs) > self._remember:
                self._jobs.popitem(last=False)
        return state

    def summary_delivery(self, summary: GroupSummary) -> _Delivery:
        """A fresh delivery of the summary of repeats suppressed in a closed window (see the flusher)."""
        self._count("summaries")
        return _Delivery(grouped_notification(summary.event, summary.count, summary.first, summary.last))

    def deliver(self, state: _Delivery, ctx: JobContext) -> None:
        """Send ``state.notification`` to every sink that has not had it yet; TransientError names the sinks
        still missing it, PermanentError means every sink refused it."""
        notification = state.notification
        assert notification is not None
        pending = [i for i in range(len(self.notifiers))
                   if i not in state.delivered and i not in state.failed_permanently]
        transient: dict[int, TransientError] = {}
        for i in pending:
            sink = self.notifiers[i]
            error = self._send(sink, notification, ctx)
            if error is None:
                state.delivered.add(i)
                self._count("delivered")
                self.observe(sink.name, "sent")
            elif isinstance(error, PermanentError):
                state.failed_permanently[i] = error
                self._count("failed_permanent")
                self.observe(sink.name, "failed")
                ctx.logger.error("notification sink %s failed permanently: %s (how to fix: %s)", sink.name,
                                 error.message, error.hint)
            else:
                transient[i] = error
                self._count("failed_transient")
                self.observe(sink.name, "failed")
        what = f"notification of {notification.worker} failure (event {notification.event_id})"
        if transient:
            names = ", ".join(self.notifiers[i].name for i in transient)
            reasons = "; ".join(transient[i].message for i in transient)
            delays = [e.delay for e in transient.values() if e.delay is not None]
            raise TransientError(f"{what} not delivered to {names} ({reasons}); "
                                 f"delivered to {len(state.delivered)} of {len(self.notifiers)} sink(s)",
                                 hint="The sink will be retried with backoff; sinks that already received it "
                                      "are not sent it again.", delay=max(delays) if delays else None)
        if state.failed_permanently and not state.delivered:
            reasons = "; ".join(e.message for e in state.failed_permanently.values())
            hints = dict.fromkeys(e.hint for e in state.failed_permanently.values())
            raise PermanentError(f"{what} failed on every sink: {reasons}", hint=" / ".join(hints))

    def _send(self, sink: Notifier, notification: Notification,
              ctx: JobContext) -> TransientError | PermanentError | None:
        """Send to one sink, retrying transient failures in-process. Returns the final error, if any."""
        for attempt, delay in enumerate((*self.retry_delays, None), start=1):
            try:
                sink.send(notification)
                return None
            except PermanentError as exc:
                return exc
            except TransientError as exc:
                last = exc
            except Exception as exc:  # noqa: BLE001 - a bug in a sink must not block the other sinks
                ctx.logger.error("notification sink %s raised an unexpected %s", sink.name, type(exc).__name__)
                log.debug("traceback of the unexpected sink error", exc_info=exc)
                return PermanentError(f"{sink.name}: unexpected {type(exc).__name__}",
                                      hint="A bug in the notification sink; the notifier log has the traceback.")
            if delay is None or (last.delay is not None and last.delay > max(self.retry_delays, default=0)):
                break  # out of in-process attempts, or the server asked for a longer pause than we would wait
            ctx.logger.warning("notification sink %s failed (attempt %d): %s; retrying in %g s", sink.name,
                               attempt, last.message, delay)
            self._count("retried")
            if self._pause(delay, ctx):
                break
        return last

    def _pause(self, seconds: float, ctx: JobContext) -> bool:
        """Wait between attempts; True if the worker is shutting down (stop retrying)."""
        if self._sleep is not None:
            self._sleep(seconds)
            return ctx.cancelled.is_set()
        return ctx.cancelled.wait(seconds)


SPEC = WorkerSpec(WORKER_NAME, {JobFailed: NotifierHandler.__call__}, prefetch=20)


def build_notifier_worker(settings: NotifySettings, notifiers: list[Notifier] | None = None,
                          clock: Callable[[], float] = time.monotonic, *,
                          retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
                          sleep: Callable[[float], None] | None = None,
                          observe: Callable[[str, str], None] | None = None,
                          flush_retry_delays: Sequence[float] = FLUSH_RETRY_DELAYS) -> WorkerSpec:
    """The ``notifier`` worker: one handler for ``job-failed``; sinks from ``settings`` unless given; a
    :class:`GroupFlusher` (``handler.flusher``) summarises suppressed repeats when their window closes."""
    sinks = build_notifiers(settings) if notifiers is None else notifiers
    handler = NotifierHandler(sinks, FailureGrouper(settings.group_window, clock=clock),
                              retry_delays=retry_delays, sleep=sleep, observe=observe)
    journal = PendingJournal(settings.pending_file) if settings.pending_file else None
    handler.flusher = GroupFlusher(handler.grouper, handler.summary_delivery, handler.deliver, clock=clock,
                                   retry_delays=flush_retry_delays, journal=journal)
    handler.on_suppressed = handler.flusher.wake
    return SPEC.bind(handler, on_start=handler.flusher.start, on_shutdown=handler.flusher.stop)
