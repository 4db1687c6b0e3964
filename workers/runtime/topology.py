"""Queue and exchange names, and idempotent declaration of the whole topology.

One durable topic exchange; routing key = event type. Per worker:
- ``<prefix>.<worker>``: durable quorum queue bound to the worker's event types. ``x-delivery-limit`` is the
  broker's backstop against crash loops; beyond it the broker dead-letters (at-least-once) to the DLQ.
- ``<prefix>.<worker>.retry.<delay>``: one quorum delay queue per backoff step; messages wait there for the
  queue's TTL, then the broker dead-letters them back into the worker's queue (and only that worker's).
- ``<prefix>.<worker>.dlq``: dead letters, with the reason in headers, kept for `appsvc-dr dlq`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from workers.runtime.settings import BrokerSettings, RetrySettings


def _delay_label(seconds: float) -> str:
    return f"{seconds:g}s"


@dataclass(frozen=True)
class WorkerQueues:
    worker: str
    main: str
    dlq: str
    retries: tuple[tuple[float, str], ...]  # (delay seconds, queue name), in backoff order

    def retry_queue(self, attempt: int) -> tuple[float, str] | None:
        """Delay queue for retry number ``attempt`` (0-based), or None when retries are exhausted."""
        return self.retries[attempt] if attempt < len(self.retries) else None


@dataclass(frozen=True)
class Topology:
    exchange: str
    prefix: str
    backoff: tuple[float, ...]
    delivery_limit: int

    @classmethod
    def from_settings(cls, broker: BrokerSettings, retry: RetrySettings) -> "Topology":
        return cls(broker.exchange, broker.queue_prefix, tuple(retry.backoff), retry.delivery_limit)

    def queues(self, worker: str) -> WorkerQueues:
        main = f"{self.prefix}.{worker}"
        retries = tuple((d, f"{main}.retry.{_delay_label(d)}") for d in self.backoff)
        return WorkerQueues(worker, main, f"{main}.dlq", retries)

    def declare(self, channel, workers: Iterable[tuple[str, Sequence[str]]]) -> None:
        """Declare exchange and, for each (worker, event types), its queues and bindings. Idempotent."""
        channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
        for worker, event_types in workers:
            q = self.queues(worker)
            channel.queue_declare(q.dlq, durable=True, arguments={"x-queue-type": "quorum"})
            channel.queue_declare(q.main, durable=True, arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": self.delivery_limit,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": q.dlq,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            })
            for delay, name in q.retries:
                channel.queue_declare(name, durable=True, arguments={
                    "x-queue-type": "quorum",
                    "x-message-ttl": int(delay * 1000),
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": q.main,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                })
            for event_type in event_types:
                channel.queue_bind(q.main, self.exchange, routing_key=event_type)
