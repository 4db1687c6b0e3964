"""Schedule slots: aligned to --at, stable across restarts, never in the past."""
from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

import pytest

from workers.scheduler import next_run, scheduled_event

UTC = timezone.utc


@pytest.mark.parametrize("now, every, at, expected", [
    (datetime(2026, 11, 22, 1, 0, tzinfo=UTC), timedelta(days=1), time(2, 0), datetime(2026, 11, 22, 2, 0, tzinfo=UTC)),
    (datetime(2026, 11, 22, 2, 0, tzinfo=UTC), timedelta(days=1), time(2, 0), datetime(2026, 11, 23, 2, 0, tzinfo=UTC)),
    (datetime(2026, 11, 22, 3, 0, tzinfo=UTC), timedelta(days=1), time(2, 0), datetime(2026, 11, 23, 2, 0, tzinfo=UTC)),
    (datetime(2026, 11, 22, 1, 0, tzinfo=UTC), timedelta(hours=6), time(2, 0), datetime(2026, 11, 22, 2, 0, tzinfo=UTC)),
    (datetime(2026, 11, 22, 9, 5, tzinfo=UTC), timedelta(hours=6), time(2, 0), datetime(2026, 11, 22, 14, 0, tzinfo=UTC)),
    (datetime(2026, 11, 22, 0, 1, tzinfo=UTC), timedelta(hours=6), time(20, 0), datetime(2026, 11, 22, 2, 0, tzinfo=UTC)),
    (datetime(2026, 11, 22, 9, 5, tzinfo=UTC), timedelta(minutes=30), None, datetime(2026, 11, 22, 9, 30, tzinfo=UTC)),
])
def test_next_slot(now, every, at, expected):
    assert next_run(now, every, at) == expected


def test_interval_must_be_positive():
    with pytest.raises(ValueError):
        next_run(datetime(2026, 1, 1, tzinfo=UTC), timedelta(0))


def test_scheduled_events_are_new_sets_with_reason_schedule():
    a, b = scheduled_event("stamp1", ("databases",)), scheduled_event("stamp1", ("databases",))
    assert a.correlation_id != b.correlation_id and a.payload.backup_set_id == a.correlation_id
    assert a.payload.reason == "schedule" and a.payload.components == ("databases",)
