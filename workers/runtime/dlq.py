"""Dead-letter queue inspection and replay. Replay sends messages back to the worker's own queue only."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from workers.runtime.connect import blocking_channel
from workers.runtime.processing import clean_headers, copy_properties
from workers.runtime.settings import BrokerSettings, RetrySettings
from workers.runtime.topology import Topology


@dataclass(frozen=True)
class DeadLetter:
    position: int
    event_id: str | None
    event_type: str | None
    headers: dict
    body: bytes

    @property
    def reason(self) -> str:
        return _text(self.headers.get("x-dr-reason")) or _text(self.headers.get("x-first-death-reason")) or "?"

    def header(self, name: str) -> str:
        return _text(self.headers.get(name)) or ""

    def summary(self) -> dict:
        return {"position": self.position, "event_id": self.event_id, "type": self.event_type,
                "reason": self.reason, "error_class": self.header("x-dr-error-class"),
                "error": self.header("x-dr-error"), "hint": self.header("x-dr-hint"),
                "attempts": self.headers.get("x-dr-attempts"), "worker": self.header("x-dr-worker"),
                "dead_lettered_at": self.header("x-dr-dead-lettered-at")}


def _text(value) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def peek(broker: BrokerSettings, retry: RetrySettings, worker: str, limit: int = 100) -> list[DeadLetter]:
    """Read up to ``limit`` dead letters without removing them (they are returned to the queue)."""
    out: list[DeadLetter] = []
    dlq = Topology.from_settings(broker, retry).queues(worker).dlq
    with blocking_channel(broker) as ch:
        for position in range(1, limit + 1):
            method, props, body = ch.basic_get(dlq, auto_ack=False)
            if method is None:
                break
            out.append(DeadLetter(position, props.message_id, props.type, dict(props.headers or {}), body))
        # closing the channel without acks returns every message to the queue
    return out


def replay(broker: BrokerSettings, retry: RetrySettings, worker: str, *, event_id: str | None = None,
           limit: int | None = None) -> int:
    """Move dead letters back to the worker's queue (all, or those matching ``event_id``); returns the count."""
    q = Topology.from_settings(broker, retry).queues(worker)
    moved = 0
    with blocking_channel(broker) as ch:
        ch.confirm_delivery()
        skipped: list[int] = []
        while limit is None or moved < limit:
            method, props, body = ch.basic_get(q.dlq, auto_ack=False)
            if method is None:
                break
            if event_id and props.message_id != event_id:
                skipped.append(method.delivery_tag)
                continue
            headers = clean_headers(props.headers)
            headers.pop("x-dr-attempt", None)  # a replay starts the backoff afresh
            headers["x-dr-replayed-at"] = datetime.now(timezone.utc).isoformat()
            ch.basic_publish("", q.main, body, copy_properties(props, headers), mandatory=True)  # confirmed before the ack below
            ch.basic_ack(method.delivery_tag)
            moved += 1
        for tag in skipped:
            ch.basic_nack(tag, requeue=True)
    return moved


def pretty_body(body: bytes) -> str:
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except Exception:  # noqa: BLE001 - garbage is shown as such
        return repr(body[:2000])


def counts(broker: BrokerSettings, retry: RetrySettings, workers: list[str]) -> dict[str, int | None]:
    """Dead letters waiting per worker (its DLQ's message count; None when the queue does not exist). Raises
    TransientError / ConfigurationError when the broker cannot be reached."""
    topology = Topology.from_settings(broker, retry)
    out: dict[str, int | None] = {}
    quiet = logging.getLogger("pika")     # a missing queue or broker is an answer here, not a logged error
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        _count(broker, topology, workers, out)
    finally:
        quiet.setLevel(level)
    return out


def _count(broker: BrokerSettings, topology: Topology, workers: list[str], out: dict[str, int | None]) -> None:
    from pika.exceptions import ChannelClosedByBroker

    with blocking_channel(broker) as ch:
        conn = ch.connection
        for worker in workers:
            try:
                out[worker] = ch.queue_declare(topology.queues(worker).dlq, passive=True).method.message_count
            except ChannelClosedByBroker:      # 404: not declared (the worker never ran here)
                out[worker] = None
                ch = conn.channel()
