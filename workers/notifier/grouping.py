"""Group repeated identical failures so a broken credential does not send a hundred identical mails.

Two failures are identical when their fingerprint matches: stamp, worker, failed event type, error class, and
the hint and message with ids and numbers blanked out (uuids, backup-set ids, counts, sizes). The first one is
sent at once; identical ones within ``window`` seconds are suppressed and counted; the first one after the
window is sent again, saying how often the failure repeated since it was first seen, and opens a new window.

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


@dataclass
class _Group:
    first_seen: datetime
    window_start: float
    last_seen: float
    repeats: int = 0


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
                return GroupDecision(send=False, repeat_count=group.repeats, first_seen=group.first_seen)
            group.window_start = now
            return GroupDecision(send=True, repeat_count=group.repeats, first_seen=group.first_seen)
