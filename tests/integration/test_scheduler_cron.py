"""The scheduler against the real RabbitMQ and a real local store: cron slots published once each, the newest slot
missed during an outage caught up once (reason catch-up), two schedulers started together publishing each slot
exactly once, and its metrics served over HTTP. Time runs on a simulated clock (faster than the wall clock);
the claims, the store and the broker are real."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from tests.fixtures.rabbit import REPO, env_for, running, settings_for, tap, wait_for
from tests.integration.deploy_support import free_port
from workers.app import App
from workers.scheduler.metrics import ScheduleMetrics
from workers.scheduler.run import Scheduler
from workers.scheduler.slots import SlotBook, slot_set_id
from workers.scheduler.triggers import parse_entries
from workers.storage.local import LocalStore

pytestmark = pytest.mark.integration
UTC = timezone.utc
STAMP = "stamp1"


class FastClock:
    """Simulated time from ``start``, running ``speed`` times faster than the wall clock (shared by schedulers)."""

    def __init__(self, start: datetime, speed: float) -> None:
        self.start, self.speed, self.t0 = start, speed, time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self.t0) * self.speed)

    def sleep(self, stop: threading.Event, seconds: float) -> bool:
        return stop.wait(min(seconds / self.speed, 1.0))


def start(settings, store_dir, clock, cron: str, metrics: ScheduleMetrics | None = None):
    """A scheduler running in a thread; returns (scheduler, stop, thread)."""
    scheduler = Scheduler(STAMP, parse_entries([cron], ("databases",)), settings.broker, LocalStore(store_dir),
                          metrics, clock=clock)
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(stop,), daemon=True)
    thread.start()
    return scheduler, stop, thread


def halt(stop, thread):
    stop.set()
    thread.join(20)
    assert not thread.is_alive(), "the scheduler did not stop"


def value(metrics: ScheduleMetrics, name: str, **labels) -> float | None:
    return metrics.registry.get_sample_value(name, {"stamp": STAMP, "schedule": "databases", **labels})


def test_the_newest_slot_missed_during_an_outage_is_published_once(rabbit_vhost, tmp_path):
    settings = settings_for(rabbit_vhost)
    seen: list = []
    with running(App(settings, [tap(seen, "backup-due")])):
        # Given a scheduler that published a few 10-minute slots (10 simulated minutes per real second)
        base = datetime.now(UTC).replace(hour=0, minute=9, second=0, microsecond=0) - timedelta(days=2)
        _, stop, thread = start(settings, tmp_path, FastClock(base, 600), "*/10 * * * *=databases")
        wait_for(lambda: len(seen) >= 2, 20, what="two scheduled slots")
        halt(stop, thread)
        time.sleep(0.5)
        before = len(seen)
        last = SlotBook(LocalStore(tmp_path), STAMP).last_published("databases")
        assert [e.payload.reason for e in seen] == ["schedule"] * before
        assert last == base + timedelta(minutes=1 + 10 * (before - 1))
        # When it is down for three hours and starts again (its clock now at the wall clock's pace)
        restart = last + timedelta(hours=3, minutes=5)
        metrics = ScheduleMetrics(STAMP)
        _, stop, thread = start(settings, tmp_path, FastClock(restart, 1), "*/10 * * * *=databases", metrics)
        try:
            # Then only the newest missed slot (3 h after the last one) is published, once, as a catch-up
            wait_for(lambda: len(seen) > before, 15, what="the catch-up")
            time.sleep(2)
            assert len(seen) == before + 1
            missed = last + timedelta(hours=3)
            event = seen[-1]
            assert event.payload.reason == "catch-up" and event.payload.components == ("databases",)
            assert event.correlation_id == slot_set_id(STAMP, "databases", missed)
            assert value(metrics, "appsvc_dr_schedule_last_published_slot_timestamp_seconds") == missed.timestamp()
            assert value(metrics, "appsvc_dr_schedule_next_slot_timestamp_seconds") == \
                (missed + timedelta(minutes=10)).timestamp()
            assert value(metrics, "appsvc_dr_schedule_publishes_total", outcome="published") == 1
        finally:
            halt(stop, thread)
        # And a second restart within the same slot publishes nothing more
        _, stop, thread = start(settings, tmp_path, FastClock(restart + timedelta(minutes=1), 1),
                                "*/10 * * * *=databases")
        time.sleep(3)
        halt(stop, thread)
        assert len(seen) == before + 1


def test_two_schedulers_started_together_publish_each_slot_once(rabbit_vhost, tmp_path):
    settings = settings_for(rabbit_vhost)
    seen: list = []
    with running(App(settings, [tap(seen, "backup-due")])):
        # Given a slot published an hour ago (so both also race for the same catch-up at start)
        clock = FastClock(datetime.now(UTC).replace(second=30, microsecond=0) - timedelta(days=1), 60)
        book = SlotBook(LocalStore(tmp_path), STAMP)
        old = clock.now().replace(second=0) - timedelta(hours=1)
        assert book.claim("databases", old, slot_set_id(STAMP, "databases", old), "schedule").won
        book.mark_published("databases", old, slot_set_id(STAMP, "databases", old), "event")
        # When two schedulers with their own connections and store handles run on the same clock
        # (a minute-slot every real second) for a few seconds
        metrics = [ScheduleMetrics(STAMP), ScheduleMetrics(STAMP)]
        runs = [start(settings, tmp_path, clock, "* * * * *=databases", m) for m in metrics]
        time.sleep(6)
        for _, stop, thread in runs:
            halt(stop, thread)
        time.sleep(1)
    # Then every slot came once, as one backup set named by the slot
    ids = [e.correlation_id for e in seen]
    assert len(ids) >= 4 and len(set(ids)) == len(ids), ids
    claimed = [slot for slot, _ in book.slots("databases") if slot > old]
    assert sorted(ids) == sorted(slot_set_id(STAMP, "databases", s) for s in claimed)
    assert [e.payload.reason for e in seen].count("catch-up") == 1
    # And each scheduler saw the slots the other published as already claimed
    published = sum(value(m, "appsvc_dr_schedule_publishes_total", outcome="published") for m in metrics)
    lost = sum(value(m, "appsvc_dr_schedule_publishes_total", outcome="already_claimed") for m in metrics)
    assert published == len(ids) and lost >= len(ids) - 1
    assert sum(value(m, "appsvc_dr_schedule_publishes_total", outcome="failed") for m in metrics) == 0


def test_a_slot_claimed_by_a_scheduler_that_died_before_publishing_is_published_on_the_next_start(
        rabbit_vhost, tmp_path):
    settings = settings_for(rabbit_vhost)
    seen: list = []
    # Given slot 02:00 published, and slot 03:00 claimed by a scheduler that died before publishing it
    two = datetime.now(UTC).replace(hour=2, minute=0, second=0, microsecond=0) - timedelta(days=1)
    three = two + timedelta(hours=1)
    dead = SlotBook(LocalStore(tmp_path), STAMP, instance="dead-scheduler")
    dead.claim("databases", two, slot_set_id(STAMP, "databases", two), "schedule")
    dead.mark_published("databases", two, slot_set_id(STAMP, "databases", two), "event")
    dead.claim("databases", three, slot_set_id(STAMP, "databases", three), "schedule")
    claim = next(tmp_path.rglob(f"{three:%Y%m%dT%H%M%SZ}.json"))
    long_ago = (datetime.now(UTC) - timedelta(minutes=30)).timestamp()
    os.utime(claim, (long_ago, long_ago))
    with running(App(settings, [tap(seen, "backup-due")])):
        # When a scheduler starts at 03:20
        _, stop, thread = start(settings, tmp_path, FastClock(three + timedelta(minutes=20), 1), "0 * * * *=databases")
        try:
            # Then it publishes 03:00 once, as the backup set the dead scheduler had named, and marks it published
            wait_for(lambda: seen, 15, what="the abandoned slot")
            time.sleep(1)
        finally:
            halt(stop, thread)
    assert [(e.payload.reason, e.correlation_id) for e in seen] == \
        [("catch-up", slot_set_id(STAMP, "databases", three))]
    assert SlotBook(LocalStore(tmp_path), STAMP).last_published("databases") == three


def test_schedule_command_reads_cron_settings_and_serves_metrics(rabbit_vhost, tmp_path):
    # Given a store in which today's 02:00 UTC slot was published (so there is nothing to catch up)
    settings = settings_for(rabbit_vhost, store={"local_path": str(tmp_path)})
    now = datetime.now(UTC)
    slot = now.replace(hour=2, minute=0, second=0, microsecond=0) - timedelta(days=1 if now.hour < 2 else 0)
    book = SlotBook(LocalStore(tmp_path), STAMP)
    book.claim("databases", slot, slot_set_id(STAMP, "databases", slot), "schedule")
    book.mark_published("databases", slot, slot_set_id(STAMP, "databases", slot), "event")
    port = free_port()
    env = env_for(settings)
    env.update(APPSVC_DR_SCHEDULE__CRON="0 2 * * *=databases", APPSVC_DR_METRICS__PORT=str(port),
               APPSVC_DR_STAMP=STAMP)
    # When `appsvc-dr schedule` runs without flags
    proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "schedule"], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def scrape() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                    text = resp.read().decode()
            except OSError:
                return None
            return text if "appsvc_dr_schedule_next_slot_timestamp_seconds{" in text else None
        text = wait_for(lambda: scrape() or proc.poll() is not None, 20, what="the scheduler's metrics")
        assert proc.poll() is None, proc.communicate()[0]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    # Then it serves the next slot, the last published one from the store, and every outcome at zero
    labels = f'schedule="databases",stamp="{STAMP}"'
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(samples[f"appsvc_dr_schedule_next_slot_timestamp_seconds{{{labels}}}"]) == \
        (slot + timedelta(days=1)).timestamp()
    assert float(samples[f"appsvc_dr_schedule_last_published_slot_timestamp_seconds{{{labels}}}"]) == \
        slot.timestamp()
    for outcome in ("published", "already_claimed", "failed"):
        assert float(samples[f'appsvc_dr_schedule_publishes_total{{outcome="{outcome}",{labels}}}']) == 0
    assert proc.returncode == 0, out
