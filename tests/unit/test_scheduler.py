"""Schedule slots: cron expressions against known next-fire tables, --every/--at slots aligned and stable across
restarts, schedule entries and settings, slot-derived backup-set ids, and write-once slot claims."""
from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

import pytest

from contracts.envelope import SET_ID
from workers.config import load_settings
from workers.runtime.errors import ConfigurationError
from workers.scheduler.run import scheduled_event
from workers.scheduler.slots import SlotBook, slot_set_id
from workers.scheduler.triggers import CronTrigger, next_run, parse_entries, zone
from workers.storage.local import LocalStore

UTC = timezone.utc


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize("now, every, at_, expected", [
    (at(2026, 11, 22, 1, 0), timedelta(days=1), time(2, 0), at(2026, 11, 22, 2, 0)),
    (at(2026, 11, 22, 2, 0), timedelta(days=1), time(2, 0), at(2026, 11, 23, 2, 0)),
    (at(2026, 11, 22, 3, 0), timedelta(days=1), time(2, 0), at(2026, 11, 23, 2, 0)),
    (at(2026, 11, 22, 1, 0), timedelta(hours=6), time(2, 0), at(2026, 11, 22, 2, 0)),
    (at(2026, 11, 22, 9, 5), timedelta(hours=6), time(2, 0), at(2026, 11, 22, 14, 0)),
    (at(2026, 11, 22, 0, 1), timedelta(hours=6), time(20, 0), at(2026, 11, 22, 2, 0)),
    (at(2026, 11, 22, 9, 5), timedelta(minutes=30), None, at(2026, 11, 22, 9, 30)),
])
def test_next_interval_slot(now, every, at_, expected):
    assert next_run(now, every, at_) == expected


def test_interval_must_be_positive():
    with pytest.raises(ValueError):
        next_run(at(2026, 1, 1), timedelta(0))


# expression, now, the next three slots (UTC)
CRON_TABLE = [
    ("0 2 * * *", at(2026, 11, 22, 1, 59), [at(2026, 11, 22, 2), at(2026, 11, 23, 2), at(2026, 11, 24, 2)]),
    ("0 2 * * *", at(2026, 11, 22, 2, 0), [at(2026, 11, 23, 2), at(2026, 11, 24, 2), at(2026, 11, 25, 2)]),
    ("*/15 * * * *", at(2026, 1, 1, 0, 7, 30), [at(2026, 1, 1, 0, 15), at(2026, 1, 1, 0, 30), at(2026, 1, 1, 0, 45)]),
    # a step over a range: 09, 11, ..., 17, then the next day
    ("0 9-17/4 * * *", at(2026, 3, 2, 12, 0), [at(2026, 3, 2, 13), at(2026, 3, 2, 17), at(2026, 3, 3, 9)]),
    ("5,35 1,13 * * *", at(2026, 3, 2, 1, 6), [at(2026, 3, 2, 1, 35), at(2026, 3, 2, 13, 5), at(2026, 3, 2, 13, 35)]),
    # names: Mondays of January (2027-01-04 is a Monday)
    ("30 3 * JAN MON", at(2026, 6, 1), [at(2027, 1, 4, 3, 30), at(2027, 1, 11, 3, 30), at(2027, 1, 18, 3, 30)]),
    ("0 0 * * SAT,SUN", at(2026, 12, 3), [at(2026, 12, 5), at(2026, 12, 6), at(2026, 12, 12)]),
    # day-of-month and day-of-week both restricted: either matches (the 13th, or any Friday)
    ("0 0 13 * FRI", at(2026, 11, 1), [at(2026, 11, 6), at(2026, 11, 13), at(2026, 11, 20)]),
    # Feb 29: leap years only
    ("0 0 29 2 *", at(2026, 3, 1), [at(2028, 2, 29), at(2032, 2, 29), at(2036, 2, 29)]),
    # the 31st: months without one are skipped
    ("0 6 31 * *", at(2026, 1, 31, 7), [at(2026, 3, 31, 6), at(2026, 5, 31, 6), at(2026, 7, 31, 6)]),
    # the last day of the month (croniter's L), across a leap February
    ("0 23 L * *", at(2028, 1, 31, 23, 30), [at(2028, 2, 29, 23), at(2028, 3, 31, 23), at(2028, 4, 30, 23)]),
    # year end
    ("59 23 31 12 *", at(2026, 12, 31, 23, 59), [at(2027, 12, 31, 23, 59), at(2028, 12, 31, 23, 59),
                                                 at(2029, 12, 31, 23, 59)]),
    ("0 0 1 */3 *", at(2026, 2, 15), [at(2026, 4, 1), at(2026, 7, 1), at(2026, 10, 1)]),
]


@pytest.mark.parametrize("expression, now, expected", CRON_TABLE)
def test_cron_next_slots(expression, now, expected):
    trigger, found = CronTrigger(expression), []
    for _ in expected:
        now = trigger.next_after(now)
        found.append(now)
    assert found == expected


@pytest.mark.parametrize("expression, now, expected", [
    ("0 * * * *", at(2026, 5, 1, 10, 0, 0), at(2026, 5, 1, 10)),         # a slot at now counts
    ("0 * * * *", at(2026, 5, 1, 10, 59, 59), at(2026, 5, 1, 10)),
    ("0 2 * * *", at(2026, 5, 1, 1, 0), at(2026, 4, 30, 2)),
    ("0 0 29 2 *", at(2027, 6, 1), at(2024, 2, 29)),
])
def test_cron_latest_slot(expression, now, expected):
    assert CronTrigger(expression).latest_at_or_before(now) == expected


def test_cron_in_a_time_zone_reports_utc():
    # 02:00 in Berlin is 01:00 UTC in winter, 00:00 UTC in summer
    berlin = CronTrigger("0 2 * * *", zone("Europe/Berlin"))
    assert berlin.next_after(at(2026, 1, 10, 12)) == at(2026, 1, 11, 1)
    assert berlin.next_after(at(2026, 7, 10, 12)) == at(2026, 7, 11, 0)


def test_cron_across_daylight_saving_changes():
    # Europe/Berlin: 2026-03-29 02:00 CET jumps to 03:00 CEST; 2026-10-25 03:00 CEST falls back to 02:00 CET
    daily = CronTrigger("30 2 * * *", zone("Europe/Berlin"))
    # the skipped 02:30 fires at 03:00 CEST (01:00 UTC), the days around it at 02:30 local
    assert [daily.next_after(n) for n in (at(2026, 3, 27, 12), at(2026, 3, 28, 12), at(2026, 3, 29, 12))] == \
        [at(2026, 3, 28, 1, 30), at(2026, 3, 29, 1), at(2026, 3, 30, 0, 30)]
    # the repeated 02:30 fires once, the first time (00:30 UTC), not again an hour later
    first = daily.next_after(at(2026, 10, 24, 12))
    assert first == at(2026, 10, 25, 0, 30) and daily.next_after(first) == at(2026, 10, 26, 1, 30)


@pytest.mark.parametrize("bad", ["0 2 * *", "0 0 2 * * * *", "0 2 * * * 2026", "61 * * * *", "0 2 * FOO *",
                                 "banana", ""])
def test_bad_cron_is_a_configuration_error(bad):
    with pytest.raises(ConfigurationError):
        CronTrigger(bad)


def test_unknown_zone_is_a_configuration_error():
    with pytest.raises(ConfigurationError):
        zone("Mars/Olympus")


def test_entries_group_by_component_set():
    schedules = parse_entries(["0 * * * *=databases", "0 2 * * *=secrets,fileshare", "30 14 * * *=databases",
                               "0 3 * * SUN"], ("secrets", "databases", "fileshare"))
    by_name = {s.name: s for s in schedules}
    assert set(by_name) == {"databases", "secrets+fileshare", "secrets+databases+fileshare"}
    dbs = by_name["databases"]
    assert dbs.components == ("databases",) and len(dbs.triggers) == 2
    assert dbs.next_after(at(2026, 5, 1, 14, 10)) == at(2026, 5, 1, 14, 30)
    assert dbs.latest_at_or_before(at(2026, 5, 1, 14, 40)) == at(2026, 5, 1, 14, 30)


def test_entries_refuse_components_the_site_does_not_back_up():
    with pytest.raises(ConfigurationError):
        parse_entries(["0 * * * *=fileshare"], ("databases",), allowed=("databases",))
    with pytest.raises(ConfigurationError):
        parse_entries(["0 * * * *=tapes"], ("databases",))


def test_schedule_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("APPSVC_DR_SCHEDULE__CRON", "0 * * * *=databases; 0 2 * * *=fileshare,secrets")
    monkeypatch.setenv("APPSVC_DR_SCHEDULE__TIMEZONE", "Europe/Berlin")
    settings = load_settings()
    assert settings.schedule.cron == ("0 * * * *=databases", "0 2 * * *=fileshare,secrets")
    monkeypatch.setenv("APPSVC_DR_SCHEDULE__CRON", '["0 2 * * *"]')
    assert load_settings().schedule.cron == ("0 2 * * *",)
    monkeypatch.setenv("APPSVC_DR_SCHEDULE__CRON", "0 2 * *=databases")
    with pytest.raises(ConfigurationError, match="schedule"):
        load_settings()


def test_slot_set_ids_are_the_same_in_every_scheduler_and_dated_by_the_slot():
    slot = at(2026, 11, 22, 2)
    a, b = slot_set_id("stamp1", "databases", slot), slot_set_id("stamp1", "databases", slot)
    assert a == b and SET_ID.match(a) and a.startswith("20261122T020000Z-")
    assert a != slot_set_id("stamp1", "databases", slot + timedelta(hours=1))
    assert a != slot_set_id("stamp2", "databases", slot) != slot_set_id("stamp1", "fileshare", slot)
    event = scheduled_event("stamp1", ("databases",), a, "catch-up")
    assert event.correlation_id == event.payload.backup_set_id == a and event.payload.reason == "catch-up"


def test_a_slot_is_claimed_once_and_remembered_once_published(tmp_path):
    # Given two schedulers' books on one local store
    first, second = (SlotBook(LocalStore(tmp_path), "stamp1", instance=n) for n in ("one", "two"))
    slot = at(2026, 11, 22, 2)
    set_id = slot_set_id("stamp1", "databases", slot)
    # When both claim the same slot
    won = first.claim("databases", slot, set_id, "schedule")
    lost = second.claim("databases", slot, set_id, "schedule")
    # Then the first wins and the second is told who holds it
    assert (won.won, lost.won, lost.holder) == (True, False, "one") and first.exclusive
    # And the slot counts as published only once its marker is written
    assert second.last_published("databases") is None
    first.mark_published("databases", slot, set_id, "event-1")
    assert second.last_published("databases") == slot and second.last_published("fileshare") is None
    # And old claims and markers are pruned down to the newest slots
    for hours in range(1, 5):
        later = slot + timedelta(hours=hours)
        first.claim("databases", later, "x", "schedule")
        first.mark_published("databases", later, "x", f"event-{hours}")
    assert first.prune("databases", 2) == 3
    assert [s for s, _ in first.slots("databases")] == [slot + timedelta(hours=3), slot + timedelta(hours=4)]
    assert len(list(LocalStore(tmp_path).list("stamp1/"))) == 4
    assert not [p for p in tmp_path.rglob("*") if ".partial-" in p.name]


def test_a_claim_without_its_marker_is_abandoned_only_when_old(tmp_path):
    import os
    book = SlotBook(LocalStore(tmp_path), "stamp1")
    slot = at(2026, 11, 22, 2)
    book.claim("databases", slot, slot_set_id("stamp1", "databases", slot), "schedule")
    assert not book.abandoned("databases", slot, timedelta(minutes=10))          # its scheduler may still publish
    claim = next(tmp_path.rglob("20261122T020000Z.json"))
    old = (datetime.now(UTC) - timedelta(minutes=11)).timestamp()
    os.utime(claim, (old, old))
    assert book.abandoned("databases", slot, timedelta(minutes=10))
    book.mark_published("databases", slot, "x", "event")
    assert not book.abandoned("databases", slot, timedelta(minutes=10))
    assert not book.abandoned("databases", slot + timedelta(hours=1), timedelta(minutes=10))   # never claimed


def test_markers_are_signed_and_a_forged_one_is_not_taken_as_published(tmp_path):
    import io
    import json

    from tests.unit.certs import signed
    from workers.scheduler.slots import published_key
    # Given a store whose writers sign and whose readers require the workers' signature
    backend = signed(LocalStore(tmp_path / "store"), tmp_path)
    book = SlotBook(backend, "stamp1")
    slot = at(2026, 11, 22, 2)
    book.claim("databases", slot, slot_set_id("stamp1", "databases", slot), "schedule")
    book.mark_published("databases", slot, slot_set_id("stamp1", "databases", slot), "event")
    with backend.open(published_key("stamp1", "databases", slot)) as stream:
        assert "signature" in json.loads(stream.read())
    assert book.last_published("databases") == slot
    # When someone with write access to the store adds an unsigned marker for a later slot
    later = slot + timedelta(days=1)
    forged = json.dumps({"format": 1, "stamp": "stamp1", "schedule": "databases",
                         "slot": later.isoformat()}).encode()
    backend.put(published_key("stamp1", "databases", later), io.BytesIO(forged))
    # Then it is not taken as the last published slot (it would suppress the catch-up)
    assert book.last_published("databases") == slot
