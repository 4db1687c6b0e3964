"""Publisher-confirm bookkeeping: which delivery each published message belongs to, and when a delivery's
messages are all confirmed.

With confirms on, the broker numbers a channel's publishes 1, 2, 3… and confirms them (ack, or nack when it
could not take one), one at a time or ``multiple`` up to a number. A message it cannot route (``mandatory``)
comes back (Basic.Return) before its confirm. A delivery is settled once every message published for it is
confirmed; only then may it be acked.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from workers.runtime.processing import Delivery, Outcome, Outgoing


@dataclass(eq=False)
class Pending:
    """A finished job whose outgoing messages await their confirms."""

    tag: int                      # delivery tag of the consumed message
    outcome: Outcome
    delivery: Delivery
    remaining: int = 0            # messages published for it and not confirmed yet
    nacked: bool = False
    returned: list[str] = field(default_factory=list)   # event types that found no queue
    copy_lost: bool = False       # a retry / dead-letter copy found no queue: never ack the original then
    escalated: bool = False       # its unroutable follow-ups were already dead-lettered once
    sent: list[Outgoing] = field(default_factory=list)


class Confirms:
    """One channel's publish sequence numbers and the deliveries waiting on them (I/O thread only)."""

    def __init__(self) -> None:
        self._seq = 0
        self._waiting: dict[int, Pending] = {}   # sequence number -> delivery, in increasing order

    def reset(self) -> int:
        """A new channel numbers its publishes from 1 again. Returns how many deliveries were still waiting
        (their acks died with the old channel: the broker redelivers them)."""
        waiting = len({id(p) for p in self._waiting.values()})
        self._seq, self._waiting = 0, {}
        return waiting

    def published(self, pending: Pending, message: Outgoing) -> None:
        """Call right after each ``basic_publish`` on the confirming channel."""
        self._seq += 1
        self._waiting[self._seq] = pending
        pending.remaining += 1
        pending.sent.append(message)

    def confirmed(self, last: int, multiple: bool, nack: bool) -> list[Pending]:
        """A Basic.Ack / Basic.Nack: the deliveries it completes, in order."""
        if multiple:  # inserted in increasing order: everything confirmed is at the front
            seqs = []
            for seq in self._waiting:
                if seq > last:
                    break
                seqs.append(seq)
        else:
            seqs = [last]
        done = []
        for seq in seqs:
            pending = self._waiting.pop(seq, None)
            if pending is None:
                continue
            pending.remaining -= 1
            pending.nacked |= nack
            if pending.remaining == 0:
                done.append(pending)
        return done

    def returned(self, message_id: str, routing_key: str) -> Pending | None:
        """The delivery a returned message was published for. The broker returns a message before it
        confirms it, so that delivery still waits; the earliest match is the one (returns come in publish
        order). A scan, not an index: returns are rare, publishes are not."""
        for pending in self._waiting.values():
            for msg in pending.sent:
                if msg.routing_key == routing_key and (msg.properties.message_id or "") == message_id:
                    return pending
        return None
