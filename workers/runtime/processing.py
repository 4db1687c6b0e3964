"""One delivery in, one outcome out: decode, run the handler, and decide what to publish and whether to ack.

Broker-agnostic so the whole decision logic is unit-testable; the runner only executes the outcome
(publish every outgoing message with confirms, then ack).
"""
from __future__ import annotations

import functools
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal, NamedTuple

import pika
from pydantic import ValidationError

from contracts import ContractError, Envelope, JobFailed, JobFailedPayload, Registry
from contracts.envelope import is_future, set_id_time
from workers.middleware.base import Hooks
from workers.runtime.amqp import PERSISTENT, event_properties
from workers.runtime.errors import DuplicateJob, TransientError, describe, hint_for, is_permanent
from workers.runtime.worker import JobContext, WorkerSpec
from workers.runtime.logs import job_context
from workers.runtime.topology import Topology

log = logging.getLogger("appsvc_dr.runtime")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
FAILURE_HEADERS = ("x-dr-reason", "x-dr-error-class", "x-dr-error", "x-dr-hint", "x-dr-worker",
                   "x-dr-original-routing-key", "x-dr-original-exchange", "x-dr-attempts",
                   "x-dr-dead-lettered-at", "x-dr-last-error", "x-death", "x-first-death-queue",
                   "x-first-death-reason", "x-first-death-exchange", "x-last-death-queue",
                   "x-last-death-reason", "x-last-death-exchange", "x-delivery-count")
CRASH_HINT = ("The job was delivered {n} times without finishing: the worker process died each time "
              "(out of memory, killed by the orchestrator, or a hard crash). Check the worker's logs and "
              "OOM events for this event id, fix the cause, then `appsvc-dr dlq replay {worker}`.")


class Delivery(NamedTuple):  # tuples: one of each per message, so cheap to build
    body: bytes
    routing_key: str
    exchange: str
    properties: pika.BasicProperties


class Outgoing(NamedTuple):
    exchange: str
    routing_key: str
    body: bytes
    properties: pika.BasicProperties
    kind: Literal["event", "retry", "dead-letter", "job-failed"]
    event_type: str


@dataclass
class Outcome:
    kind: Literal["ok", "retried", "dead_lettered", "rejected", "duplicate"]
    event_type: str
    messages: list[Outgoing] = field(default_factory=list)
    error: str | None = None


class JobProcessor:
    def __init__(self, spec: WorkerSpec, registry: Registry, topology: Topology, crash_limit: int,
                 hooks: Hooks | None = None) -> None:
        self.spec, self.registry, self.topology = spec, registry, topology
        self.queues = topology.queues(spec.name)
        self.crash_limit = crash_limit
        self.hooks = hooks or Hooks()
        self.source = f"worker:{spec.name}"
        self._logger = logging.LoggerAdapter(log, {})
        self._progress = functools.partial(self.hooks.on_progress, spec.name)

    def process(self, delivery: Delivery, cancelled: threading.Event | None = None) -> Outcome:
        props = delivery.properties
        headers = props.headers or {}
        attempt = int(headers.get("x-dr-attempt", 0) or 0)
        try:
            event = self.registry.decode(delivery.body, (props.type, headers.get("x-dr-version")))
        except ContractError as exc:
            with job_context(self.spec.name, exc.event_id, None):
                log.warning("rejected malformed message (%s): %s", exc.reason, exc.detail)
                outcome = self.dead_letter(delivery, None, exc, attempt, kind="rejected", reason=exc.reason)
                self.hooks.after_job(self.spec.name, outcome.event_type, outcome.kind, None)
                return outcome
        event_id = str(event.event_id)
        with job_context(self.spec.name, event_id, event.correlation_id):
            return self._process(delivery, event, event_id, headers, attempt, cancelled)

    def _process(self, delivery: Delivery, event: Envelope, event_id: str, headers: dict, attempt: int,
                 cancelled: threading.Event | None) -> Outcome:
        handler = self.spec.handler_for(event)
        if handler is None:
            exc2 = ContractError("no-handler", f"worker {self.spec.name} has no handler for {event.type}",
                                 event_type=event.type)
            outcome = self.dead_letter(delivery, event, exc2, attempt, kind="rejected", reason="no-handler")
            self.hooks.after_job(self.spec.name, event.type, outcome.kind, None)
            return outcome
        deliveries = int(headers.get("x-delivery-count", 0) or 0)
        if deliveries >= self.crash_limit:
            log.error("dead-lettering after %d deliveries without an outcome", deliveries)
            hint = CRASH_HINT.format(n=deliveries, worker=self.spec.name)
            outcome = self.dead_letter(delivery, event, None, attempt, reason="crash-loop",
                                        error=("CrashLoop", f"delivered {deliveries} times without "
                                               "finishing", hint))
            self.hooks.after_job(self.spec.name, event.type, outcome.kind, None)
            return outcome
        return self._run(delivery, event, event_id, handler, attempt, cancelled or threading.Event())

    def _run(self, delivery, event: Envelope, event_id: str, handler, attempt: int, cancelled) -> Outcome:
        # positional (worker, job_key, attempt, logger, cancelled, progress): keywords cost more, once per job
        ctx = JobContext(self.spec.name, f"{self.spec.name}:{event_id}", attempt, self._logger, cancelled,
                         self._progress)
        self.hooks.before_job(self.spec.name, event.type)
        started = time.monotonic()
        try:
            follow_ups = list(handler(event, ctx) or ())
            for f in follow_ups:
                if not isinstance(f, Envelope):
                    raise TypeError(f"handler returned {type(f).__name__}, expected an event")
        except DuplicateJob as dup:  # another event's job does this work: ack, nothing to publish
            duration = time.monotonic() - started
            log.info("duplicate acked without running: %s", dup.message)
            self.hooks.after_job(self.spec.name, event.type, "duplicate", duration)
            return Outcome("duplicate", event.type, [], dup.message)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an outcome
            duration = time.monotonic() - started
            log.warning("job failed (attempt %d): %s", attempt + 1, describe(exc),
                        exc_info=_traceback_worthy(exc))
            outcome = self._failed(delivery, event, exc, attempt)
            self.hooks.after_job(self.spec.name, event.type, outcome.kind, duration)
            return outcome
        duration = time.monotonic() - started
        log.info("job done in %.3fs, %d follow-up event(s)", duration, len(follow_ups))
        self.hooks.after_job(self.spec.name, event.type, "ok", duration)
        return Outcome("ok", event.type, [self._event_message(f) for f in follow_ups])

    def _failed(self, delivery, event: Envelope, exc: Exception, attempt: int) -> Outcome:
        if is_permanent(exc):
            return self.dead_letter(delivery, event, exc, attempt, reason="permanent")
        if isinstance(exc, RecursionError):  # over-deep input fails the same way every time: no retries
            return self.dead_letter(delivery, event, exc, attempt, reason="too-deep",
                                    error=("RecursionError", "the event nests data too deeply to process",
                                           "Publish the event again without deeply nested fields."))
        step = self._retry_step(exc, attempt)
        if step is None:
            return self.dead_letter(delivery, event, exc, attempt, reason="retries-exhausted")
        delay, queue = step
        headers = clean_headers(delivery.properties.headers)
        headers.update({"x-dr-attempt": attempt + 1, "x-dr-last-error": describe(exc)[:1000]})
        props = copy_properties(delivery.properties, headers)
        until = getattr(exc, "until", None)
        log.info("retrying in %gs (attempt %d%s)", delay, attempt + 2,
                 f", retried until {until:%Y-%m-%d %H:%M:%S} UTC" if until else f" of {len(self.queues.retries) + 1}")
        self.hooks.on_retry(self.spec.name, event.type, delay)
        msg = Outgoing("", queue, delivery.body, props, "retry", event.type)
        return Outcome("retried", event.type, [msg], describe(exc))

    def _retry_step(self, exc: Exception, attempt: int) -> tuple[float, str] | None:
        step = self.queues.retry_queue(attempt)
        if step is None and isinstance(exc, TransientError) and exc.retry_beyond_backoff(datetime.now(timezone.utc)):
            return self.queues.retries[-1]  # to retry until a time: the last step, as often as it takes
        wanted = getattr(exc, "delay", None)
        if step is not None and wanted:
            longer = [s for s in self.queues.retries if s[0] >= wanted]
            step = longer[0] if longer else self.queues.retries[-1]
        return step

    def dead_letter(self, delivery: Delivery, event: Envelope | None, exc: BaseException | None,
                     attempt: int, *, reason: str, kind: str = "dead_lettered",
                     error: tuple[str, str, str] | None = None) -> Outcome:
        error_class, message, hint = error or (type(exc).__name__, describe(exc), hint_for(exc))
        event_type = event.type if event else _peek(delivery.body, "type") or "unknown"
        headers = clean_headers(delivery.properties.headers)
        headers.update({
            "x-dr-reason": reason, "x-dr-error-class": error_class, "x-dr-error": message[:2000],
            "x-dr-hint": hint[:2000], "x-dr-worker": self.spec.name, "x-dr-attempts": attempt + 1,
            "x-dr-original-routing-key": delivery.routing_key, "x-dr-original-exchange": delivery.exchange,
            "x-dr-dead-lettered-at": datetime.now(timezone.utc).isoformat(),
        })
        messages = [Outgoing("", self.queues.dlq, delivery.body, copy_properties(delivery.properties, headers),
                             "dead-letter", event_type)]
        self.hooks.on_dead_letter(self.spec.name, event_type, reason)
        log.error("dead-lettered to %s (%s): %s | how to fix: %s", self.queues.dlq, reason, message, hint)
        if event_type != JobFailed.event_type:  # never notify about a failed notification: no loops
            failed = self._job_failed(delivery, event, event_type, error_class, message, hint, attempt)
            messages.append(self._event_message(failed, kind="job-failed"))
        return Outcome(kind, event_type, messages, message)  # type: ignore[arg-type]

    def _job_failed(self, delivery, event, event_type, error_class, message, hint, attempt) -> JobFailed:
        stamp = event.stamp if event else _safe_name(_peek(delivery.body, "stamp"))
        set_id = event.correlation_id if event else _safe_name(_peek(delivery.body, "correlation_id"))
        return JobFailed(
            source=self.source, stamp=stamp, correlation_id=set_id,
            causation_id=event.event_id if event else None,
            payload=JobFailedPayload(
                worker=self.spec.name, failed_event_id=event.event_id if event else None,
                failed_event_type=event_type if event_type != "unknown" else None, error_class=error_class,
                message=message[:4000], attempts=attempt + 1, will_retry=False, hint=hint[:2000],
                dead_letter_queue=self.queues.dlq))

    def _event_message(self, event: Envelope, kind: str = "event") -> Outgoing:
        return Outgoing(self.topology.exchange, event.routing_key, event.to_json(), event_properties(event),
                        kind, event.type)  # type: ignore[arg-type]


def _traceback_worthy(exc: Exception) -> bool:
    """Unexpected errors get a traceback in the log, except validation errors, whose text echoes inputs."""
    return not (is_permanent(exc) or isinstance(exc, (TransientError, ValidationError)))


def clean_headers(headers: dict | None) -> dict:
    """Headers without the failure bookkeeping of an earlier dead-lettering or retry."""
    return {k: v for k, v in (headers or {}).items() if k not in FAILURE_HEADERS}


def copy_properties(props: pika.BasicProperties, headers: dict) -> pika.BasicProperties:
    """The same message identity and metadata, persistent, with ``headers``."""
    return pika.BasicProperties(
        content_type=props.content_type, delivery_mode=PERSISTENT, message_id=props.message_id,
        type=props.type, correlation_id=props.correlation_id, app_id=props.app_id, timestamp=props.timestamp,
        headers=headers)


def _peek(body: bytes, key: str) -> str | None:
    try:
        value = json.loads(body).get(key)
    except Exception:  # noqa: BLE001 - garbage bodies are expected here
        return None
    return value if isinstance(value, str) else None


def _safe_name(value: str | None) -> str:
    """A stamp or set id from a malformed body, if the contracts would accept it (else ``unknown``)."""
    return value if value and _NAME.match(value) and not is_future(set_id_time(value)) else "unknown"
