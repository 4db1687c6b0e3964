"""The mirror's work per event is what the event names (its set, its repository folder), never a listing of the
whole stamp; the timer reconciles the rest with a bounded budget per tick, and the gauges stay honest about
what is still missing outside an event's scope."""
from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest

from contracts import (ArtifactStored, ArtifactStoredPayload, BackupSetCompleted, BackupSetCompletedPayload,
                       FileshareSynced, new_backup_set_id, utcnow)
from tests.unit.test_mirror import KEEP_ALL, _ctx, _target, primary  # noqa: F401 - the fixture
from tests.unit.test_retention import STAMP, make_set
from workers.artifacts.sets import stamp_index_key
from workers.catalog.lifecycle import remember_stamp
from workers.artifacts.service import ArtifactStore
from workers.middleware.metrics import Metrics
from workers.mirror.handler import MirrorGauges, MirrorHandler, Target
from workers.mirror.scope import event_scope
from workers.mirror.sync import Budget, compare
from workers.runtime.errors import TransientError
from workers.storage.local import LocalStore


class Listed(LocalStore):
    """A real local store that remembers every prefix it was asked to list."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.listed: list[str] = []

    def list(self, prefix: str = ""):
        self.listed.append(prefix)
        return super().list(prefix)


def _stored(set_id: str, component: str = "databases", name: str = "hosting.bak", key: str | None = None):
    return ArtifactStored(source="test", stamp=STAMP, correlation_id=set_id, payload=ArtifactStoredPayload(
        key=key or f"{STAMP}/{set_id}/{component}/{name}", store="file:///x", component=component, name=name,
        plaintext_size=1, plaintext_sha256="0" * 64, stored_size=1, stored_sha256="0" * 64, compressed=False,
        encrypted=False, verified_by="stat", duration_seconds=0))


def _completed(set_id: str) -> BackupSetCompleted:
    return BackupSetCompleted(source="test", stamp=STAMP, correlation_id=set_id, payload=BackupSetCompletedPayload(
        components=("secrets", "databases"), artifacts=2, stored_bytes=10, completed_at=utcnow()))


def _gauge(metrics: Metrics, name: str, target: str) -> float:
    return metrics.registry.get_sample_value(name, {"target": target})


def test_an_event_copies_its_own_set_only_and_the_timer_catches_up_the_rest(tmp_path):
    # Given a primary holding an old set the target never got (it was down then) and a new set just made
    primary_backend = Listed(tmp_path / "primary")
    store = ArtifactStore(primary_backend, compress=False)
    old = make_set(store, 3)
    new = make_set(store, 0, set_id=new_backup_set_id())
    target = Listed(tmp_path / "target")
    metrics = Metrics()
    handler = MirrorHandler(primary_backend, [Target(_target("dr"), target, KEEP_ALL)], timedelta(days=7),
                            MirrorGauges(metrics), catch_up=Budget(objects=3, bytes=1 << 30))
    primary_backend.listed.clear()
    # When the worker hears that the new set completed
    out = handler(_completed(new), _ctx())
    # Then only the new set's folder was listed, on both sides, and only it was copied
    assert set(primary_backend.listed) <= {f"{STAMP}/{new}/"} and set(target.listed) == {f"{STAMP}/{new}/"}
    assert {i.key.split("/")[1] for i in target.list(f"{STAMP}/")} == {new}
    assert out[0].payload.backlog == 0 and out[0].payload.copied > 0
    # And the old set, missing on the target, is not reported as caught up by that event (nothing was known yet)
    missing = len(compare(primary_backend, target, STAMP, KEEP_ALL).missing)
    assert missing > 3
    # When the timer ticks (a budget of 3 objects per tick)
    handler.stamps.clear()
    remember_stamp(primary_backend, STAMP)                 # the catalog's stamp index on the primary
    handler.catch_up()
    # Then it copied 3 objects and the gauges say what is still missing, with a lag
    assert len(compare(primary_backend, target, STAMP, KEEP_ALL).missing) == missing + 1 - 3   # + the stamp index
    assert _gauge(metrics, "appsvc_dr_mirror_backlog", "dr") == missing + 1 - 3
    assert _gauge(metrics, "appsvc_dr_mirror_lag_seconds", "dr") > 0
    # And another event for the new set leaves the gauges as the timer found them (its scope is caught up)
    handler(_stored(new), _ctx())
    assert _gauge(metrics, "appsvc_dr_mirror_backlog", "dr") == missing + 1 - 3
    # When the timer ticks until done, the target holds both sets and the gauges are 0
    for _ in range(10):
        handler.catch_up()
    assert compare(primary_backend, target, STAMP, KEEP_ALL).missing == []
    assert target.stat(stamp_index_key(STAMP)).size > 0
    assert {i.key.split("/")[1] for i in target.list(f"{STAMP}/")} == {old, new}
    assert _gauge(metrics, "appsvc_dr_mirror_backlog", "dr") == 0
    assert _gauge(metrics, "appsvc_dr_mirror_lag_seconds", "dr") == 0


def test_a_scope_is_only_what_the_event_names_and_hostile_fields_give_a_full_reconciliation():
    now_set = new_backup_set_id()
    six = timedelta(hours=6)
    assert event_scope(_completed(now_set), six) == (f"{STAMP}/{now_set}/",)
    assert event_scope(_stored(now_set, "functions", "acct1.jsonl"), six) == (
        f"{STAMP}/{now_set}/", f"{STAMP}/functions-blobs/acct1/")
    synced = FileshareSynced.model_construct(stamp=STAMP, correlation_id=now_set,
                                             payload=SimpleNamespace(snapshot_id="abc123"))
    assert event_scope(synced, six) == (f"{STAMP}/{now_set}/", f"{STAMP}/fileshare/index/",
                                        f"{STAMP}/fileshare/packs/", f"{STAMP}/fileshare/snapshots/abc123.")
    # An old set (a late redelivery; a target's retention may have deleted it there): the full reconciliation
    assert event_scope(_completed(new_backup_set_id(utcnow() - timedelta(days=2))), six) is None
    # A key outside the stamp, or climbing out of it: no scope
    assert event_scope(_stored(now_set, key=f"other/{now_set}/databases/x.bak"), six) is None
    assert event_scope(_stored(now_set, key=f"{STAMP}/../etc/x.bak"), six) is None


def test_the_first_event_after_a_target_was_down_reconciles_the_whole_stamp(tmp_path):
    # Given an old set on the primary and a target that is down (its directory is not there)
    primary_backend = Listed(tmp_path / "primary")
    store = ArtifactStore(primary_backend, compress=False)
    old = make_set(store, 3)
    first = make_set(store, 0, set_id=new_backup_set_id())
    down = LocalStore(tmp_path / "target", create=False)
    handler = MirrorHandler(primary_backend, [Target(_target("dr"), down, KEEP_ALL)], timedelta(days=7),
                            MirrorGauges(Metrics()))
    # When an event arrives while it is down / Then the job is retried later
    with pytest.raises(TransientError):
        handler(_completed(first), _ctx())
    # When the target comes back empty and the next event names a new set only
    (tmp_path / "target").mkdir()
    newer = make_set(store, 0, set_id=new_backup_set_id())
    handler(_completed(newer), _ctx())
    # Then that first run after the outage reconciled the whole stamp: every set is on the target
    assert {i.key.split("/")[1] for i in down.list(f"{STAMP}/")} == {old, first, newer}
    # And the run after it is proportional again: only the event's set is listed
    primary_backend.listed.clear()
    handler(_stored(newer), _ctx())
    assert set(primary_backend.listed) == {f"{STAMP}/{newer}/"}
