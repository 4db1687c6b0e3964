"""Backup sets on the real broker: the real catalog and upload workers, a local-directory store.

* the retention race: the catalog's queue behind, a newer set completes first — the older, fully stored set
  survives and completes when its events arrive; an old incomplete set is deleted with a notification;
* seven artifact-ready events with future-dated set ids are dead-lettered as malformed and delete nothing;
* an artifact for a set with no plan is retried while the plan may still come (past the end of a short backoff),
  then dead-lettered as never planned.
"""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta, timezone

import pika
import pytest

from contracts import (ArtifactReady, ArtifactReadyPayload, BackupDue, BackupDuePayload, new_backup_set_id)
from tests.fixtures.rabbit import dead_letters, running, settings_for, tap, wait_for
from tests.unit.test_catalog_handler import stored
from workers.app import App
from workers.artifacts.setmanifest import read_manifest
from workers.artifacts.service import ArtifactStore
from workers.artifacts.sets import Plan, read_marker, read_plan, write_marker, write_plan
from workers.runtime.publisher import Publisher
from workers.storage.local import LocalStore

pytestmark = pytest.mark.integration
STAMP = "stamp1"
COMPONENTS = ("secrets", "fileshare")


def due(set_id: str, hours_ago: float) -> BackupDue:
    return BackupDue(source="scheduler", stamp=STAMP, correlation_id=set_id,
                     occurred_at=datetime.now(timezone.utc) - timedelta(hours=hours_ago),
                     payload=BackupDuePayload(backup_set_id=set_id, components=COMPONENTS, reason="schedule"))


def sets_left(store: ArtifactStore) -> set[str]:
    return {info.key.split("/")[1] for info in store.backend.list(f"{STAMP}/")}


def test_the_retention_race_the_older_fully_stored_set_survives_and_completes(rabbit_vhost, tmp_path, caplog):
    settings = settings_for(rabbit_vhost, store={"kind": "local", "local_path": str(tmp_path / "store")},
                            retention={"keep_last": 2, "incomplete_grace": "1m"})
    store = ArtifactStore(LocalStore(tmp_path / "store"), compress=False)
    now = datetime.now(timezone.utc)
    older, newer = new_backup_set_id(now - timedelta(hours=2)), new_backup_set_id(now - timedelta(hours=1))
    abandoned, young = new_backup_set_id(now - timedelta(hours=30)), new_backup_set_id(now - timedelta(seconds=20))
    seen: list = []
    app = App(settings, ["catalog", tap(seen, "backup-set-completed", "job-failed")])
    with running(app), Publisher(settings.broker) as pub, caplog.at_level(logging.WARNING):
        # Given four planned sets: older and newer fully stored, an abandoned one and a young one half stored
        for set_id, hours in ((abandoned, 30), (older, 2), (newer, 1), (young, 0.005)):
            pub.publish(due(set_id, hours))
        wait_for(lambda: all(read_plan(store.backend, STAMP, s) for s in (older, newer, abandoned, young)), 20,
                 what="plans")
        older_events = [stored(store, older, c, f"{c}.bin") for c in COMPONENTS]
        newer_events = [stored(store, newer, c, f"{c}.bin") for c in COMPONENTS]
        stored(store, abandoned, "secrets", "secrets.bin")
        young_event = stored(store, young, "secrets", "secrets.bin")
        # When the catalog, behind, hears of the newer set first (and of the young one's first artifact)
        for event in (young_event, *newer_events):
            pub.publish(event)
        wait_for(lambda: any(e.type == "backup-set-completed" and e.correlation_id == newer for e in seen), 20,
                 what="the newer set to complete")
        wait_for(lambda: any(e.type == "job-failed" for e in seen), 10, what="the deletion notice")
        # Then the older set, fully stored, is still there; the young incomplete one too; the abandoned one is gone
        assert {older, newer, young} <= sets_left(store) and abandoned not in sets_left(store)
        # And its deletion was logged at WARNING and told to the operator
        [notice] = [e for e in seen if e.type == "job-failed"]
        assert notice.correlation_id == abandoned and notice.payload.error_class == "IncompleteSetDeleted"
        assert notice.payload.severity == "warning" and "planned: secrets, fileshare" in notice.payload.message
        assert any(r.levelno == logging.WARNING and f"INCOMPLETE set {STAMP}/{abandoned}" in r.getMessage()
                   for r in caplog.records)
        # When the older set's events finally arrive, Then it completes
        for event in older_events:
            pub.publish(event)
        wait_for(lambda: any(e.type == "backup-set-completed" and e.correlation_id == older for e in seen), 20,
                 what="the older set to complete")
    assert read_marker(store.backend, STAMP, older) is not None and {older, newer, young} <= sets_left(store)


def _future_artifact_ready(staged: str, year: int) -> bytes:
    """An artifact-ready as a hostile publisher sends it: valid in every field but a set id dated ``year``."""
    good = ArtifactReady(source="worker:db-backup", stamp=STAMP, correlation_id=new_backup_set_id(),
                         payload=ArtifactReadyPayload(component="databases", name="appservice_hosting.bak",
                                                      staged_path=staged))
    body = json.loads(good.to_json())
    body["correlation_id"] = new_backup_set_id(datetime(year, 1, 1, tzinfo=timezone.utc))
    return json.dumps(body).encode()


def test_future_dated_set_ids_are_dead_lettered_as_malformed_and_delete_nothing(rabbit_vhost, tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "dump.bak").write_bytes(b"attacker data")
    settings = settings_for(rabbit_vhost, store={"kind": "local", "local_path": str(tmp_path / "store")},
                            staging={"database_dir": str(staging)}, retention={"keep_last": 1})
    store = ArtifactStore(LocalStore(tmp_path / "store"), compress=False)
    # Given two genuine complete sets
    genuine = []
    for days in (2, 1):
        when = datetime.now(timezone.utc) - timedelta(days=days)
        set_id = new_backup_set_id(when)
        write_plan(store.backend, Plan(STAMP, set_id, ("secrets",), "schedule", when))
        stored(store, set_id, "secrets", "SystemSecrets.json")
        write_marker(store.backend, STAMP, set_id, {"requested_at": when.isoformat()})
        genuine.append(set_id)
    before = sorted(info.key for info in store.backend.list())
    app = App(settings, ["upload", "catalog"])
    with running(app), Publisher(settings.broker) as pub:
        # When seven artifact-ready events with set ids dated in the future arrive
        for year in range(2990, 2997):
            pub.publish_raw(settings.broker.exchange, "artifact-ready", _future_artifact_ready(
                str(staging / "dump.bak"), year), pika.BasicProperties(delivery_mode=2, content_type="application/json"))
        letters = wait_for(lambda: len(dead_letters(settings, "upload")) == 7 and dead_letters(settings, "upload"), 20,
                           what="seven dead letters")
    # Then each is dead-lettered as malformed, saying why
    assert {d.reason for d in letters} == {"invalid"}
    assert all("dated more than 10 minutes in the future" in d.header("x-dr-error") for d in letters)
    # And the store is exactly as it was: nothing stored, nothing deleted
    assert sorted(info.key for info in store.backend.list()) == before and sets_left(store) == set(genuine)


def test_an_artifact_for_an_unplanned_set_is_retried_then_dead_lettered_after_the_deadline(rabbit_vhost, tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    settings = settings_for(rabbit_vhost, store={"kind": "local", "local_path": str(tmp_path / "store")},
                            staging={"database_dir": str(staging)},
                            retry={"backoff": [0.5], "crash_limit": 2, "delivery_limit": 2},
                            retention={"set_deadline": "4s"})
    store = ArtifactStore(LocalStore(tmp_path / "store"), compress=False)
    never, late = new_backup_set_id(), new_backup_set_id()
    for name in ("never.bak", "late.bak"):
        (staging / name).write_bytes(name.encode() * 100)
    app = App(settings, ["upload"])
    with running(app), Publisher(settings.broker) as pub:
        # Given artifacts for two sets nobody planned yet
        for set_id, name in ((never, "never.bak"), (late, "late.bak")):
            pub.publish(ArtifactReady(source="worker:db-backup", stamp=STAMP, correlation_id=set_id,
                                      payload=ArtifactReadyPayload(component="databases", name=name,
                                                                   staged_path=str(staging / name))))
        published = time.monotonic()
        # When the plan of one arrives a moment later (the catalog was behind), past the whole backoff
        time.sleep(1.5)
        write_plan(store.backend, Plan(STAMP, late, ("databases",), "schedule", datetime.now(timezone.utc)))
        # Then that artifact is stored on a retry
        wait_for(lambda: read_manifest(store.backend, STAMP, late), 15, what="the late set's artifact")
        # And the other is retried until the 4 s deadline (far past its one-step, 0.5 s backoff and the broker's
        # delivery limit of 2: every retry is a new message), then dead-lettered with the reason
        [letter] = wait_for(lambda: dead_letters(settings, "upload"), 20, what="the dead letter")
        dead_at = time.monotonic()
    assert letter.reason == "permanent" and letter.headers["x-dr-attempts"] > 3
    assert dead_at - published >= 2.5   # the set's id is from just before publishing: ~4 s, with slack
    assert f"backup set {STAMP}/{never} has no plan" in letter.header("x-dr-error")
    assert "never planned" in letter.header("x-dr-error") and "backup-due" in letter.header("x-dr-hint")
    assert not [info.key for info in store.backend.list(f"{STAMP}/{never}/")]
