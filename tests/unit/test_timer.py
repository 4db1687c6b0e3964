"""The worker timer (``WorkerSpec.on_timer``): its events are published, a failing tick is logged and the next
one runs. The runner starting it against the real broker is proven by tests/integration/test_set_lifecycle.py."""
from __future__ import annotations

import logging

from contracts import BackupDue, BackupDuePayload, Envelope
from workers.runtime.errors import TransientError
from workers.runtime.settings import BrokerSettings
from workers.runtime.timer import Ticker
from workers.runtime.worker import WorkerSpec


class Recorder:
    """Stands in for the Publisher: keeps what it was asked to publish."""

    def __init__(self) -> None:
        self.published: list[Envelope] = []

    def publish(self, event: Envelope) -> None:
        self.published.append(event)


def due(n: int) -> BackupDue:
    return BackupDue(source="test", stamp="stamp1", correlation_id=f"set-{n}",
                     payload=BackupDuePayload(backup_set_id=f"set-{n}"))


def test_each_tick_publishes_what_the_callback_returns_and_a_failing_tick_is_logged(caplog):
    # Given a timer whose callback returns two events, then fails, then returns one
    results = iter([[due(1), due(2)], TransientError("store unreachable", hint="check the store"), [due(3)]])

    def on_timer():
        result = next(results)
        if isinstance(result, Exception):
            raise result
        return result

    spec = WorkerSpec("ticking", {BackupDue: lambda e, ctx: None}, on_timer=on_timer, timer_interval=0.01)
    ticker, publisher = Ticker(spec, BrokerSettings()), Recorder()
    # When it ticks three times
    with caplog.at_level(logging.ERROR, logger="appsvc_dr.timer"):
        for _ in range(3):
            ticker.tick(publisher)
    # Then every returned event was published in order, and the failure was logged without stopping the timer
    assert [e.correlation_id for e in publisher.published] == ["set-1", "set-2", "set-3"]
    assert ticker.ticks == 3
    assert "timer of ticking failed: store unreachable" in caplog.text


def test_bind_keeps_the_timer_and_its_interval():
    spec = WorkerSpec("ticking", {BackupDue: lambda e, ctx: None})
    bound = spec.bind(object(), on_timer=lambda: [], timer_interval=2.5)
    assert bound.on_timer is not None and bound.timer_interval == 2.5 and spec.on_timer is None
