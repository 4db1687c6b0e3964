"""The capacity of every configured store (the primary and each mirror target) for a stamp: free space, what the
stamp takes, and whether the next backup set fits (``workers.artifacts.capacity``). Shown by `status` and by
`config check --connect`; a store that cannot be measured is shown with why, never fails the command."""
from __future__ import annotations

from dataclasses import dataclass

from workers.artifacts.capacity import Forecast, forecast, size_text
from workers.config import Settings
from workers.runtime.errors import DrError
from workers.storage.capacity import measure
from workers.storage.factory import build_store
from workers.storage.settings import StoreSettings


@dataclass(frozen=True)
class StoreCapacity:
    store: str                          # "primary" or the mirror target's name
    location: str                       # the backend's name (s3://bucket, smb://..., a path)
    forecast: Forecast | None = None
    error: str | None = None            # why it was not measured

    @property
    def will_not_fit(self) -> bool:
        return self.forecast is not None and self.forecast.fits_next is False

    def line(self) -> str:
        if self.forecast is None:
            return f"{self.store} ({self.location}): not measured — {self.error}"
        f = self.forecast
        free = "free space unknown (set quota_bytes)" if f.space.free is None else \
            f"{size_text(f.space.free)} free ({f.space.measured_by})"
        if not f.recent_sizes:
            nxt = "next set: no complete set yet to size from"
        else:
            fit = "" if f.sets_fit is None else f", about {f.sets_fit} more set(s) fit"
            nxt = f"next set ~{size_text(f.next_set)}{fit}"
        warn = "  << the next set will not fit" if self.will_not_fit else ""
        return f"{self.store} ({self.location}): {free}, {size_text(f.stamp_used)} used by {f.stamp}, {nxt}{warn}"

    def to_json(self) -> dict:
        f = self.forecast
        return {"store": self.store, "location": self.location, "error": self.error,
                "free_bytes": f.space.free if f else None, "used_bytes": f.stamp_used if f else None,
                "next_set_bytes": f.next_set if f else None, "fits_next": f.fits_next if f else None,
                "sets_fit": f.sets_fit if f else None, "measured_by": f.space.measured_by if f else None}


def store_sections(settings: Settings) -> list[tuple[str, StoreSettings, int]]:
    """(name, store section, keep_last) of the primary and each mirror target (its own keep_last, if set)."""
    return [("primary", settings.store, settings.retention.keep_last)] + [
        (t.name, t.store_settings(), settings.retention.keep_last if t.keep_last is None else t.keep_last)
        for t in settings.mirror.targets]


def capacities(settings: Settings, stamps: list[str]) -> dict[str, list[StoreCapacity]]:
    """Per stamp, one entry per store; each store is measured once whatever the number of stamps."""
    out: dict[str, list[StoreCapacity]] = {stamp: [] for stamp in stamps}
    for name, section, keep_last in store_sections(settings):
        try:
            store = build_store(section)
        except DrError as exc:
            for stamp in stamps:
                out[stamp].append(StoreCapacity(name, section.kind, error=exc.message))
            continue
        try:
            out_of = _measured(store, section.quota_bytes, stamps, keep_last)
        finally:
            store.close()
        for stamp in stamps:
            result = out_of[stamp]
            out[stamp].append(StoreCapacity(name, store.name, *((result, None) if isinstance(result, Forecast)
                                                                 else (None, result))))
    return out


def _measured(store, quota: int | None, stamps: list[str], keep_last: int) -> dict[str, Forecast | str]:
    """Per stamp, its forecast or why there is none."""
    try:
        space = measure(store, quota)
    except DrError as exc:
        return {stamp: exc.message for stamp in stamps}
    out: dict[str, Forecast | str] = {}
    for stamp in stamps:
        try:
            out[stamp] = forecast(store, stamp, keep_last, space)
        except DrError as exc:
            out[stamp] = exc.message
    return out
