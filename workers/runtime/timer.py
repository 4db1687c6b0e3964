"""A worker's timer: ``WorkerSpec.on_timer`` called every ``timer_interval`` seconds while the worker runs.

For what happens when *no* event arrives (a backup set whose deadline passes). The timer runs on its own
thread, so a long job never delays it and it never delays a job; the events it returns are published with
publisher confirms on a connection of its own (:class:`~workers.runtime.publisher.Publisher`). A failing tick
is logged and the next one runs as usual. Idempotency is the callback's business: with several replicas,
every replica ticks (write the state change once, to the store, before returning its event).
"""
from __future__ import annotations

import logging
import threading

from workers.middleware.base import Hooks
from workers.runtime.errors import describe
from workers.runtime.logs import worker_context
from workers.runtime.publisher import Publisher
from workers.runtime.settings import BrokerSettings
from workers.runtime.worker import WorkerSpec

log = logging.getLogger("appsvc_dr.timer")


class Ticker:
    def __init__(self, spec: WorkerSpec, broker: BrokerSettings, hooks: Hooks | None = None) -> None:
        self.spec, self.broker, self.hooks = spec, broker, hooks or Hooks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"{spec.name}-timer", daemon=True)
        self.ticks = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        with worker_context(self.spec.name), Publisher(self.broker, retry_for=60.0) as publisher:
            while not self._stop.wait(self.spec.timer_interval):
                self.tick(publisher)

    def tick(self, publisher: Publisher) -> None:
        """One call of the callback, and its events published (each confirmed before the next)."""
        assert self.spec.on_timer is not None
        self.ticks += 1
        try:
            events = list(self.spec.on_timer() or ())
            for event in events:
                publisher.publish(event)
                self.hooks.on_published(self.spec.name, event.type)
        except Exception as exc:  # noqa: BLE001 - a failing tick must not kill the worker; the next one retries
            log.error("timer of %s failed: %s", self.spec.name, describe(exc), exc_info=not hasattr(exc, "hint"))
