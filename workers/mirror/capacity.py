"""Capacity of every store (the primary and each mirror target), measured before a backup set (``backup-due``)
and after it (``backup-set-completed``): exported as ``appsvc_dr_store_free_bytes{target}``,
``appsvc_dr_store_used_bytes{target,stamp}`` and ``appsvc_dr_store_next_set_bytes{target}``, and a warning
(``job-failed``, severity warning, for the notifier) when the next set is forecast not to fit — before it fails."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from contracts import Envelope, JobFailed, JobFailedPayload
from workers.artifacts.capacity import Forecast, forecast, size_text
from workers.artifacts.jobs import follow_up
from workers.middleware.metrics import Metrics
from workers.storage.base import StorageBackend, StorageError
from workers.storage.capacity import measure

log = logging.getLogger("appsvc_dr.mirror.capacity")


@dataclass(frozen=True)
class Watched:
    name: str                   # "primary" or the mirror target's name
    backend: StorageBackend
    quota: int | None
    keep_last: int


class CapacityWatch:
    def __init__(self, stores: list[Watched], metrics: Metrics, worker: str) -> None:
        self.stores, self.metrics, self.worker = stores, metrics, worker

    def check(self, event: Envelope, when: str) -> list[Envelope]:
        """Measure every store for ``event.stamp``; a warning follow-up per store the next set will not fit."""
        out: list[Envelope] = []
        for store in self.stores:
            try:
                result = forecast(store.backend, event.stamp, store.keep_last, measure(store.backend, store.quota))
            except StorageError as exc:
                log.warning("capacity of %s (%s) not measured %s the set: %s", store.name, store.backend.name, when,
                            getattr(exc, "message", exc))
                continue
            self._export(store.name, result)
            log.info("capacity %s the set, %s: %s", when, store.name, result.describe())
            if result.fits_next is False:
                out.append(self._warning(event, store, result, when))
        return out

    def _export(self, name: str, result: Forecast) -> None:
        if result.space.free is not None:
            self.metrics.store_free.labels(name).set(result.space.free)
        self.metrics.store_used.labels(name, result.stamp).set(result.stamp_used)
        self.metrics.store_next_set.labels(name).set(result.next_set)

    def _warning(self, event: Envelope, store: Watched, result: Forecast, when: str) -> Envelope:
        message = (f"store {store.name} ({store.backend.name}) will not fit the next backup set of {result.stamp}: "
                   f"~{size_text(result.next_set)} expected, {size_text(result.space.free or 0)} free "
                   f"(measured {when} set {event.correlation_id}). {result.describe()}")
        hint = ("Free space or grow the volume / quota behind this store (quota_bytes for S3), or keep fewer sets "
                "(RETENTION__KEEP_LAST, or the target's keep_last), before the next set fails for space.")
        return follow_up(event, JobFailed, JobFailedPayload(
            worker=self.worker, failed_event_id=event.event_id, failed_event_type=event.type,
            error_class="StoreAlmostFull", message=message[:4000], attempts=1, will_retry=False, hint=hint,
            severity="warning"), source=f"worker:{self.worker}", part=f"capacity-{store.name}")
