"""What a worker is: handlers that take a typed event and a job context and return follow-up events."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol, Sequence

from contracts import Envelope


class ProgressSink(Protocol):
    def __call__(self, kind: str, nbytes: int) -> None: ...


@dataclass
class JobContext:
    """Everything a handler may use besides the event.

    ``job_key`` is stable across redeliveries and retries of the same event by the same worker, so a handler
    can name its outputs deterministically and find them again (idempotency). ``cancelled`` is set when the
    worker is shutting down past its grace period; long jobs should check it between steps.
    """

    worker: str
    job_key: str
    attempt: int
    logger: logging.LoggerAdapter
    cancelled: threading.Event = field(default_factory=threading.Event)
    progress: ProgressSink = field(default=lambda kind, nbytes: None)


Handler = Callable[[Envelope, JobContext], Sequence[Envelope] | None]


@dataclass(frozen=True)
class WorkerSpec:
    """A worker: its name (queue names derive from it) and one handler per event type it consumes."""

    name: str
    handlers: Mapping[str, Handler]
    concurrency: int = 1
    prefetch: int | None = None  # default: concurrency. Deliveries waiting behind a running job count toward
    #                              RabbitMQ's consumer_timeout, so long-job workers must not prefetch more.
    on_start: Callable[[], None] | None = None      # once, as the worker starts (before it consumes)
    on_shutdown: Callable[[], None] | None = None

    @property
    def event_types(self) -> list[str]:
        return sorted(self.handlers)
