"""Dead-letter queue inspection and replay. Replay sends messages back to the worker's own queue only."""
from __future__ import annotations

import itertools
import json
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterator

import pika.exceptions

from workers.runtime.connect import blocking_channel
from workers.runtime.errors import ConfigurationError
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


def _queues(broker: BrokerSettings, retry: RetrySettings, worker: str):
    return Topology.from_settings(broker, retry).queues(worker)


@dataclass(frozen=True)
class Census:
    """How many dead letters a queue holds (``total``) and why (``by_reason``, over the ``counted`` letters read
    just after: letters dead-lettered or replayed meanwhile make the two differ)."""

    queue: str
    total: int
    counted: int
    by_reason: dict[str, int]


def scan(broker: BrokerSettings, retry: RetrySettings, worker: str, limit: int | None = None,
         event_id: str | None = None) -> Iterator[DeadLetter]:
    """Dead letters one at a time, without removing them. Only the letter being looked at is in memory,
    however long the queue and large the bodies.

    Every look goes once round the whole queue and hands the letters back in delivery order: a quorum queue
    puts requeued messages behind the ones still waiting, so stopping at ``limit`` would rotate the queue and
    the next look would start elsewhere.
    """
    queue = _queues(broker, retry, worker).dlq
    seen, last_tag = 0, 0
    with blocking_channel(broker) as ch:
        try:
            for position in itertools.count(1):
                method, props, body = ch.basic_get(queue, auto_ack=False)
                if method is None:
                    return
                last_tag = method.delivery_tag
                if (limit is not None and seen >= limit) or (event_id and props.message_id != event_id):
                    continue
                seen += 1
                yield DeadLetter(position, props.message_id, props.type, dict(props.headers or {}), body)
        finally:
            if ch.is_open:
                while True:  # the rest of the round when the caller stopped early
                    method, _props, _body = ch.basic_get(queue, auto_ack=False)
                    if method is None:
                        break
                    last_tag = method.delivery_tag
                if last_tag:
                    ch.basic_nack(last_tag, multiple=True, requeue=True)


def census(broker: BrokerSettings, retry: RetrySettings, worker: str) -> Census:
    """The queue's message count and every letter's reason (bodies are dropped as they are read: memory does
    not grow with the queue)."""
    queue = _queues(broker, retry, worker).dlq
    try:
        with blocking_channel(broker) as ch:
            total = ch.queue_declare(queue, passive=True).method.message_count
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 404:
            raise
        raise ConfigurationError(f"there is no dead-letter queue {queue!r} in vhost {broker.vhost!r}",
                                 hint="Check the worker name (the built-in ones: db-backup, fileshare, secrets, "
                                      "upload, notifier, catalog) and APPSVC_DR_BROKER__VHOST; "
                                      "`appsvc-dr topology declare` creates the queues.") from None
    reasons: Counter[str] = Counter(d.reason for d in scan(broker, retry, worker)) if total else Counter()
    return Census(queue, total, sum(reasons.values()), dict(reasons.most_common()))


def peek(broker: BrokerSettings, retry: RetrySettings, worker: str, limit: int = 100) -> list[DeadLetter]:
    """Up to ``limit`` dead letters in a list (bodies included): for small looks; :func:`scan` streams."""
    return list(scan(broker, retry, worker, limit))


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
