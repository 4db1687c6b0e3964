"""Group repeated identical failures so a broken credential does not send a hundred identical mails.

Two failures are identical when their fingerprint matches: stamp, worker, failed event type, error class, and
the hint and message with ids and numbers blanked out (uuids, backup-set ids, counts, sizes). The first one is
sent at once; identical ones within ``window`` seconds are suppressed and counted; the first one after the
window is sent again, saying how often the failure repeated since it was first seen, and opens a new window.

Timer flush: suppressed repeats must not wait for a next failure that may never come. :meth:`FailureGrouper.due`
hands out one :class:`GroupSummary` per group whose window has closed with suppressed repeats ("N more
identical failures between T1 and T2") and opens a new window at that moment, so a failure that keeps
repeating yields one summary per window; :meth:`FailureGrouper.next_due` says when the next one is due. The
notifier's :class:`~workers.notifier.flusher.GroupFlusher` thread calls them.

A group nobody has seen for ``forget_after`` seconds is forgotten (the next failure counts as new), and at most
``max_groups`` groups are kept (least recently seen dropped first). The clock is injectable for tests.
"""
from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from contracts.events.failures import JobFailed

Fingerprint = tuple[str, ...]

_UUID = re.compile(r"\b[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\b")
_HEXID = re.compile(r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def normalise(text: str) -> str:
    """``text`` with uuids, hex ids and numbers replaced by placeholders and whitespace collapsed."""
    text = _UUID.sub("<uuid>", text)
    text = _HEXID.sub("<id>", text)
    text = _NUMBER.sub("<n>", text)
    return " ".join(text.split())


def fingerprint(event: JobFailed) -> Fingerprint:
    """What makes two failures "the same failure"."""
    p = event.payload
    return (event.stamp, p.worker, p.failed_event_type or "", p.error_class, normalise(p.hint),
            normalise(p.message))


@dataclass(frozen=True)
class GroupDecision:
    """Whether to send this failure now and, if it repeats an earlier one, how often since when."""

    send: bool
    repeat_count: int
    """Occurrences of this failure after the first one (0 = this is the first)."""
    first_seen: datetime | None
    """When the first occurrence happened; None for a first occurrence."""


@dataclass(frozen=True)
class GroupSummary:
    """Failures suppressed in one closed window of a group, to be reported without waiting for another."""

    event: JobFailed
    """The latest suppressed failure (its wording, hint and ids describe the summary)."""
    count: int
    first: datetime
    """When the first and the last suppressed failure happened (their ``occurred_at``)."""
    last: datetime
    first_seen: datetime
    """When the group's first failure happened."""


@dataclass
class _Group:
    first_seen: datetime
    window_start: float
    last_seen: float
    repeats: int = 0
    pending: int = 0                           # suppressed in the current window, not reported yet
    pending_first: datetime | None = None
    pending_last: JobFailed | None = None

    def peek(self) -> GroupSummary | None:
        """The pending repeats as a summary, left pending; None when there are none."""
        if not self.pending or self.pending_last is None:
            return None
        last = self.pending_last
        return GroupSummary(event=last, count=self.pending, first=self.pending_first or last.occurred_at,
                            last=last.occurred_at, first_seen=self.first_seen)

    def summary(self) -> GroupSummary | None:
        """The pending repeats as a summary (and forget them); None when there are none."""
        summary = self.peek()
        self.pending, self.pending_first, self.pending_last = 0, None, None
        return summary


class FailureGrouper:
    """Thread-safe grouping of identical failures within a time window."""

    def __init__(self, window: float, *, clock: Callable[[], float] = time.monotonic,
                 forget_after: float | None = None, max_groups: int = 10_000) -> None:
        if window < 0:
            raise ValueError("window must be >= 0 seconds")
        self.window = window
        self.forget_after = forget_after if forget_after is not None else max(4 * window, 24 * 3600.0)
        self.max_groups = max_groups
        self._clock = clock
        self._groups: OrderedDict[Fingerprint, _Group] = OrderedDict()
        self._lock = threading.Lock()
        self.suppressed = 0
        """How many failures were suppressed so far (a counter for metrics)."""

    def __len__(self) -> int:
        return len(self._groups)

    def observe(self, event: JobFailed) -> GroupDecision:
        """Record one failure and decide whether it is sent now."""
        key = fingerprint(event)
        with self._lock:
            now = self._clock()
            group = self._groups.get(key)
            if group is not None and now - group.last_seen >= self.forget_after:
                group = None
            if group is None or self.window <= 0:
                self._groups[key] = _Group(first_seen=event.occurred_at, window_start=now, last_seen=now)
                self._groups.move_to_end(key)
                while len(self._groups) > self.max_groups:
                    self._groups.popitem(last=False)
                return GroupDecision(send=True, repeat_count=0, first_seen=None)
            self._groups.move_to_end(key)
            group.last_seen = now
            group.repeats += 1
            if now - group.window_start < self.window:
                self.suppressed += 1
                group.pending += 1
                group.pending_first = group.pending_first or event.occurred_at
                group.pending_last = event
                return GroupDecision(send=False, repeat_count=group.repeats, first_seen=group.first_seen)
            group.window_start = now
            group.summary()  # this notification reports them (its repeat count covers the pending ones)
            return GroupDecision(send=True, repeat_count=group.repeats, first_seen=group.first_seen)

    def due(self, *, force: bool = False) -> list[GroupSummary]:
        """Summaries of every group whose window has closed with suppressed repeats (every group with
        repeats when ``force``, e.g. at shutdown); each such group starts a new window now."""
        out: list[GroupSummary] = []
        with self._lock:
            now = self._clock()
            for group in self._groups.values():
                if group.pending and (force or now - group.window_start >= self.window):
                    summary = group.summary()
                    if summary is not None:
                        out.append(summary)
                    group.window_start = now
        return out

    def peek(self) -> list[GroupSummary]:
        """The pending repeats of every group as summaries, left pending (what a journal must keep)."""
        with self._lock:
            return [summary for g in self._groups.values() if (summary := g.peek()) is not None]

    def next_due(self) -> float | None:
        """Seconds until the next window with suppressed repeats closes (0: overdue); None when none waits."""
        with self._lock:
            ends = [g.window_start + self.window for g in self._groups.values() if g.pending]
            return max(min(ends) - self._clock(), 0.0) if ends else None
