"""Acking the deliveries of one channel: which are settled, in delivery order, and the acks sent once per I/O loop
pass (one ``multiple`` ack for the settled front, single acks for jobs that finished ahead of an earlier one)."""
from __future__ import annotations

import itertools
from typing import Any, Callable

from pika.adapters.select_connection import IOLoop


class Acks:
    """The current channel's deliveries not acked yet, and their batched acks (I/O thread only). ``channel``
    returns the channel to ack on, None while there is none."""

    def __init__(self, ioloop: IOLoop, channel: Callable[[], Any]) -> None:
        self._ioloop, self._channel = ioloop, channel
        self._unsettled: dict[int, bool] = {}  # delivery tag -> done, in delivery order (tags only grow)
        self._scheduled = False

    def received(self, tag: int) -> None:
        self._unsettled[tag] = False

    def forget(self, tag: int) -> None:
        """A delivery requeued instead of acked."""
        self._unsettled.pop(tag, None)

    def clear(self) -> None:
        """The channel is gone, and its tags with it."""
        self._unsettled.clear()

    def ack(self, tag: int) -> None:
        """Acks go out once per loop pass: one ``multiple`` ack for the settled front of the deliveries (in
        order, the usual case), single acks for jobs that finished ahead of an earlier one still running."""
        self._unsettled[tag] = True
        if not self._scheduled:
            self._scheduled = True
            self._ioloop.call_later(0, self.flush)

    def flush(self) -> None:
        self._scheduled = False
        channel = self._channel()
        if channel is None:  # connection lost meanwhile: the broker redelivers, and the tags are gone
            return
        front = list(itertools.takewhile(self._unsettled.__getitem__, self._unsettled))
        for tag in front:
            del self._unsettled[tag]
        if front:
            channel.basic_ack(front[-1], multiple=True)
        for tag in [t for t, done in self._unsettled.items() if done]:
            del self._unsettled[tag]
            channel.basic_ack(tag)
