"""What a worker is: handlers that take a typed event and a job context and return follow-up events."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Protocol, Sequence

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


Handler = Callable[[Any, JobContext], Sequence[Envelope] | None]
"""Takes the event (an instance of the model it is declared for) and the job context; returns follow-ups."""


@dataclass(frozen=True)
class WorkerSpec:
    """A worker, declared once: its name (queue names derive from it) and, per event model it consumes, the
    handler that gets that model's instances. Its queue is bound to exactly these models' event types.

    Handlers may be plain functions ``(event, ctx)``, or methods of a handler class declared unbound
    (``{BackupDue: DbBackupHandler.backup_due}``) at module level — so the topology can be derived without
    building the worker — and bound to an instance with :meth:`bind` when the worker is built.
    """

    name: str
    handlers: Mapping[type[Envelope], Handler]
    concurrency: int = 1
    prefetch: int | None = None  # default: concurrency. Deliveries waiting behind a running job count toward
    #                              RabbitMQ's consumer_timeout, so long-job workers must not prefetch more.
    on_start: Callable[[], None] | None = None      # once, as the worker starts (before it consumes)
    on_shutdown: Callable[[], None] | None = None
    on_timer: Callable[[], Sequence[Envelope] | None] | None = None  # every ``timer_interval`` s while running;
    #                              its events are published with confirms (e.g. deadlines that pass without events)
    timer_interval: float = 60.0
    target: object | None = None  # the handler object :meth:`bind` bound the methods to

    def __post_init__(self) -> None:
        for model in self.handlers:
            if not (isinstance(model, type) and issubclass(model, Envelope) and model.event_type):
                raise TypeError(f"worker {self.name}: handlers are keyed by event model classes (e.g. "
                                f"BackupDue), not {model!r}")

    @property
    def event_types(self) -> list[str]:
        """The routing keys its queue is bound to."""
        return sorted({model.event_type for model in self.handlers})

    @property
    def models(self) -> list[type[Envelope]]:
        return list(self.handlers)

    def handler_for(self, event: Envelope) -> Handler | None:
        """The handler declared for exactly this event's model (another version of the type has none)."""
        return self.handlers.get(type(event))

    def bind(self, target: object, *, on_start: Callable[[], None] | None = None,
             on_shutdown: Callable[[], None] | None = None,
             on_timer: Callable[[], Sequence[Envelope] | None] | None = None,
             timer_interval: float | None = None) -> "WorkerSpec":
        """This spec with its handlers, methods of ``target``'s class declared unbound, bound to ``target``."""
        bound = {model: method.__get__(target) for model, method in self.handlers.items()}
        return replace(self, handlers=bound, target=target, on_start=on_start or self.on_start,
                       on_shutdown=on_shutdown or self.on_shutdown, on_timer=on_timer or self.on_timer,
                       timer_interval=timer_interval or self.timer_interval)
