"""Turn a ``job-failed`` event into a :class:`Notification`: what failed, how to fix it, how to replay it.

Every sink renders the same :class:`Notification`, so a Teams card, a Slack message and an e-mail say the same
thing. The hint ("how to fix") is always the second thing a reader sees, right after what failed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from contracts.events.failures import JobFailed

PRODUCT = "appservice-dr"
SUBJECT_MAX = 150
"""Longest "what failed" line used in titles and subjects (Slack headers stop at 150 characters)."""


def _one_line(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class Notification:
    """One failure notification, independent of the sink that delivers it. Never holds secret values."""

    title: str
    summary: str
    severity: Literal["error", "warning"]
    worker: str
    stamp: str
    backup_set_id: str
    event_id: str
    """Id of the ``job-failed`` event itself."""
    failed_event_type: str | None
    failed_event_id: str | None
    error_class: str
    message: str
    hint: str
    attempts: int
    will_retry: bool
    dead_letter_queue: str | None
    occurred_at: datetime
    repeat_count: int = 0
    """How many more times the same failure happened since ``first_seen`` (0 = first time)."""
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    """Set on a grouping summary: ``repeat_count`` identical failures between ``first_seen`` and this."""

    @property
    def is_summary(self) -> bool:
        return self.last_seen is not None

    @property
    def what_failed(self) -> str:
        """A short "what failed" line for titles and mail subjects."""
        job = self.failed_event_type or "undecodable message"
        if self.is_summary:
            return _one_line(f"{_more(self.repeat_count)} of {job}: {self.message}", SUBJECT_MAX)
        return _one_line(f"{job} job failed: {self.message}", SUBJECT_MAX)

    @property
    def replay_command(self) -> str | None:
        """The command that replays the dead-lettered job, or None while nothing waits in a dead-letter queue."""
        return f"appsvc-dr dlq replay {self.worker}" if self.dead_letter_queue else None

    @property
    def status(self) -> str:
        if self.will_retry:
            return f"will be retried automatically (attempt {self.attempts} failed)"
        if self.dead_letter_queue:
            return f"dead-lettered to queue {self.dead_letter_queue} after {self.attempts} attempt(s)"
        if self.severity == "warning":
            return "the job finished with this warning; nothing waits in a dead-letter queue"
        return f"given up after {self.attempts} attempt(s)"

    @property
    def repeat_line(self) -> str | None:
        if not self.repeat_count or self.first_seen is None:
            return None
        if self.last_seen is not None:
            return (f"{_more(self.repeat_count)} of {self.failed_event_type or 'undecodable message'} "
                    f"({self.worker}) between {_when(self.first_seen)} and {_when(self.last_seen)}.")
        return f"Repeated {self.repeat_count} times since {_when(self.first_seen)}."

    def facts(self) -> list[tuple[str, str]]:
        """Label/value pairs for cards and the mail body, most useful first."""
        pairs = [("Worker", self.worker), ("Stamp", self.stamp), ("Backup set", self.backup_set_id),
                 ("Failed event", f"{self.failed_event_type or '?'} {self.failed_event_id or '(not decodable)'}"),
                 ("Error", self.error_class), ("Attempts", str(self.attempts)), ("Status", self.status),
                 ("Occurred", _when(self.occurred_at)), ("Notification event", self.event_id)]
        if self.dead_letter_queue:
            pairs.insert(6, ("Dead-letter queue", self.dead_letter_queue))
        if self.repeat_line:
            pairs.append(("Repeats", self.repeat_line))
        return pairs

    def text(self) -> str:
        """The full plain-text body: what failed, how to fix, replay, then the details."""
        lines = [self.summary, "", "Details:"]
        width = max(len(label) for label, _ in self.facts())
        lines += [f"  {label.ljust(width)}  {value}" for label, value in self.facts()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: every field of the job-failed event plus the rendered title/summary."""
        data = dataclasses.asdict(self)
        data["occurred_at"] = self.occurred_at.isoformat()
        data["first_seen"] = self.first_seen.isoformat() if self.first_seen else None
        data["last_seen"] = self.last_seen.isoformat() if self.last_seen else None
        data.update(source=PRODUCT, what_failed=self.what_failed, status=self.status,
                    replay_command=self.replay_command)
        return data

    def with_repeats(self, repeat_count: int, first_seen: datetime | None) -> "Notification":
        """The same notification, marked as the n-th repeat of a failure first seen at ``first_seen``."""
        return build(self, repeat_count=repeat_count, first_seen=first_seen)


def _more(count: int) -> str:
    return f"{count} more identical failure{'s' if count != 1 else ''}"


def _summary(n: Notification) -> str:
    level = "ERROR" if n.severity == "error" else "WARNING"
    lines = [f"{level}: {n.worker} on stamp {n.stamp} — "
             + ((n.repeat_line or "") if n.is_summary else f"{n.failed_event_type or 'undecodable message'} "
                f"failed ({n.error_class})."),
             f"What failed{' (latest)' if n.is_summary else ''}: {n.message}",
             f"How to fix: {n.hint}"]
    if n.replay_command:
        lines.append(f"After fixing, replay it: {n.replay_command}")
    lines.append(f"Status: {n.status}.")
    if n.repeat_line and not n.is_summary:
        lines.append(n.repeat_line)
    return "\n".join(lines)


def build(base: Notification, **changes: Any) -> Notification:
    """``dataclasses.replace`` that re-renders the title and summary from the changed fields."""
    draft = dataclasses.replace(base, **changes)
    level = "ERROR" if draft.severity == "error" else "WARNING"
    title = _one_line(f"[{PRODUCT}] {level} {draft.worker}: {draft.what_failed}", SUBJECT_MAX + 60)
    return dataclasses.replace(draft, title=title, summary=_summary(draft))


def notification_from_event(event: JobFailed, *, repeat_count: int = 0,
                            first_seen: datetime | None = None) -> Notification:
    """Build the notification for one ``job-failed`` event."""
    p = event.payload
    draft = Notification(
        title="", summary="", severity=p.severity, worker=p.worker, stamp=event.stamp,
        backup_set_id=event.correlation_id, event_id=str(event.event_id), failed_event_type=p.failed_event_type,
        failed_event_id=str(p.failed_event_id) if p.failed_event_id else None, error_class=p.error_class,
        message=p.message, hint=p.hint, attempts=p.attempts, will_retry=p.will_retry,
        dead_letter_queue=p.dead_letter_queue, occurred_at=event.occurred_at, repeat_count=repeat_count,
        first_seen=first_seen)
    return build(draft)


def grouped_notification(event: JobFailed, count: int, first: datetime, last: datetime) -> Notification:
    """The summary of ``count`` identical failures suppressed between ``first`` and ``last``; ``event`` is the
    latest of them (its message, hint and ids are shown)."""
    return build(notification_from_event(event), repeat_count=count, first_seen=first, last_seen=last)
