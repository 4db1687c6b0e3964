"""`config check --connect`, store part: every store configured with S3 Object Lock (the primary, each mirror
target) must have a bucket with Object Lock and versioning enabled, and lock objects at least as long as its
retention policy keeps a set; and every store's sizing ("7 sets × ~X GB = Y GB needed, Z GB free")."""
from __future__ import annotations

from datetime import timedelta

from workers.cli.capacity_data import capacities
from workers.config import Settings
from workers.runtime.errors import DrError
from workers.storage.factory import build_store
from workers.storage.settings import StoreSettings


def _locked_stores(settings: Settings) -> list[tuple[str, StoreSettings, timedelta | None]]:
    """(name, store section, keep span) of every store with Object Lock configured."""
    stores = [("primary", settings.store, settings.retention.keep_within)]
    stores += [(t.name, t.store_settings(), t.keep_within or settings.retention.keep_within)
               for t in settings.mirror.targets]
    return [(name, store, span) for name, store, span in stores if store.kind == "s3" and store.s3_object_lock]


def check_object_lock(settings: Settings) -> int:
    """Print one line per Object-Locked store; 1 when any of them is not set up as configured."""
    failed = 0
    for name, section, span in _locked_stores(settings):
        where = f"Object Lock on {name} (s3://{section.s3_bucket} at {section.s3_endpoint})"
        store = build_store(section)
        try:
            problems = store.check_lock()  # type: ignore[attr-defined]
        except DrError as exc:
            problems = [f"{exc.message} ({exc.hint})"]
        finally:
            store.close()
        lock = timedelta(days=section.s3_lock_days)
        if span is not None and lock < span:
            problems.append(f"objects are locked for {section.s3_lock_days} day(s), less than the {span.days} "
                            "day(s) the retention policy keeps a set (raise s3_lock_days)")
        if problems:
            failed = 1
            print(f"{where}: FAILED — {'; '.join(problems)}\nhow to fix: create the bucket with Object Lock "
                  "(`mc mb --with-lock`, or `aws s3api create-bucket --object-lock-enabled-for-bucket`), which "
                  "also enables versioning; see deploy/s3-policies/README.md")
        else:
            print(f"{where}: ok ({section.s3_object_lock}, {section.s3_lock_days} day(s); versioning enabled)")
    return failed


def print_capacity(settings: Settings) -> None:
    """One sizing line per store (never fails the check: a forecast is advice)."""
    for entry in capacities(settings, [settings.stamp])[settings.stamp]:
        if entry.forecast is None:
            print(f"Capacity of {entry.store} ({entry.location}): not measured — {entry.error}")
            continue
        warn = "  WARNING: the next set will not fit" if entry.will_not_fit else ""
        print(f"Capacity of {entry.store} ({entry.location}): {entry.forecast.describe()}{warn}")
