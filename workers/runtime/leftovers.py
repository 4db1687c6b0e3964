"""Queues left behind by workers a site no longer runs (``APPSVC_DR_COMPONENTS`` dropped their component).

Such a queue stays bound to the exchange, so every ``backup-due`` is still copied into it and nothing ever
drains it. ``appsvc-dr topology declare`` reports them; ``--delete-unused`` deletes them: the worker's queue and
its retry queues (their messages are work for a worker this site does not run), and its dead-letter queue only
when it is empty (dead letters are evidence: look at them with ``appsvc-dr dlq list <worker>`` first).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Iterable, Iterator

from pika import exceptions as pex

from workers.runtime.connect import blocking_channel
from workers.runtime.settings import BrokerSettings
from workers.runtime.topology import Topology


@dataclass(frozen=True)
class Leftover:
    worker: str
    queue: str
    messages: int
    dead_letters: bool                      # the worker's dead-letter queue


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """pika logs every channel the broker closes as a warning: expected here (a queue that does not exist)."""
    log = logging.getLogger("pika.channel")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _channels(channel):
    """The channel, or a fresh one on the same connection once the broker closed it (a 404/406 does)."""
    while True:
        if channel.is_closed:
            channel = channel.connection.channel()
        yield channel


def find(broker: BrokerSettings, topology: Topology, workers: Iterable[str]) -> list[Leftover]:
    """Every queue of ``workers`` that exists on the broker, with its message count."""
    found = []
    with _quiet(), blocking_channel(broker) as first:
        channels = _channels(first)
        for worker in workers:
            q = topology.queues(worker)
            for name in (q.main, *(n for _, n in q.retries), q.dlq):
                try:
                    ok = next(channels).queue_declare(name, passive=True)
                except pex.ChannelClosedByBroker as exc:
                    if exc.reply_code == 404:
                        continue
                    raise
                found.append(Leftover(worker, name, ok.method.message_count, name == q.dlq))
    return found


def delete(broker: BrokerSettings, leftovers: Iterable[Leftover]) -> list[Leftover]:
    """Delete ``leftovers``, dead-letter queues only when empty; returns the ones kept. (Quorum queues do not
    support delete-if-empty: the count is read just before; a dead letter arriving in between would be lost,
    but nothing dead-letters into the queue of a worker that does not run.)"""
    kept = []
    with _quiet(), blocking_channel(broker) as first:
        channels = _channels(first)
        for left in leftovers:
            try:
                channel = next(channels)
                if left.dead_letters and channel.queue_declare(left.queue, passive=True).method.message_count:
                    kept.append(left)
                    continue
                channel.queue_delete(left.queue)
            except pex.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:
                    raise
    return kept
