"""Mirroring between real local stores: what a target should hold, copies verified against records, corruption
on the primary never copied, reads falling back to a copy, the worker's events and metrics."""
from __future__ import annotations

import io
import json
import logging
import re
import threading
from datetime import timedelta

import pytest

from contracts import (ArtifactStored, ArtifactStoredPayload, BackupDue, BackupDuePayload, BackupSetCompleted,
                       BackupSetCompletedPayload, new_backup_set_id, utcnow)
from tests.unit.test_retention import STAMP, make_set
from workers.artifacts.retention import apply_retention
from workers.artifacts.service import ArtifactStore
from workers.cli import main
from workers.middleware.metrics import Metrics
from workers.artifacts.capacity import forecast
from workers.mirror.capacity import CapacityWatch, Watched
from workers.mirror.handler import MirrorGauges, MirrorHandler, Target
from workers.storage.capacity import measure
from workers.mirror.sync import Policy, compare, sync
from workers.runtime.errors import TransientError
from workers.runtime.worker import JobContext
from workers.storage.fallback import FallbackStore
from workers.mirror.sync import expected
from workers.storage.local import LocalStore

KEEP_ALL = Policy(keep_last=30, keep_within=None, grace=timedelta(hours=6))


@pytest.fixture
def primary(tmp_path) -> ArtifactStore:
    return ArtifactStore(LocalStore(tmp_path / "primary"), compress=False)


def files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_set_is_copied_byte_for_byte_marker_last_and_a_second_run_copies_nothing(primary, tmp_path):
    # Given one complete set on the primary and an empty target
    set_id = make_set(primary, 1)
    target = LocalStore(tmp_path / "target")
    order: list[str] = []
    put = target.put
    target.put = lambda key, *a, **kw: (order.append(key), put(key, *a, **kw))[1]  # type: ignore[method-assign]
    # When the target is synced
    result = sync(primary.backend, target, STAMP, KEEP_ALL)
    # Then it holds exactly the primary's files (objects and metadata sidecars), the marker written last
    assert files(tmp_path / "target") == files(tmp_path / "primary")
    assert result.copied == result.wanted == len(order) and not result.backlog and not result.corrupt
    assert order[-1] == f"{STAMP}/{set_id}/complete.json"
    assert order.index(f"{STAMP}/{set_id}/databases/hosting.bak") < order.index(
        f"{STAMP}/{set_id}/databases/hosting.bak.record.json")
    # And a second run finds nothing to do
    again = sync(primary.backend, target, STAMP, KEEP_ALL)
    assert again.copied == 0 and compare(primary.backend, target, STAMP, KEEP_ALL, read_data=True).missing == []


def test_a_target_with_its_own_retention_is_not_refilled_with_sets_it_deletes(primary, tmp_path):
    # Given three complete sets and a target that keeps only the newest one
    sets = [make_set(primary, days) for days in (3, 2, 1)]
    target = LocalStore(tmp_path / "target")
    keep_one = Policy(keep_last=1, keep_within=None, grace=timedelta(hours=6))
    # When it is synced
    sync(primary.backend, target, STAMP, keep_one)
    # Then only the newest set is there, and its retention has nothing to delete
    assert {k.key.split("/")[1] for k in target.list(f"{STAMP}/")} == {sets[-1]}
    assert apply_retention(target, STAMP, keep_last=1).delete == []


def test_an_artifact_corrupted_on_the_primary_is_never_copied(primary, tmp_path):
    # Given a set whose database artifact was altered on the primary (same size, one byte flipped)
    set_id = make_set(primary, 1)
    victim = tmp_path / "primary" / STAMP / set_id / "databases" / "hosting.bak"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 1
    victim.write_bytes(bytes(data))
    target = LocalStore(tmp_path / "target")
    # When the target is synced
    result = sync(primary.backend, target, STAMP, KEEP_ALL)
    # Then the damaged artifact is reported and not on the target (not even a partial file); the rest is
    assert result.corrupt == [f"{STAMP}/{set_id}/databases/hosting.bak"]
    assert not (tmp_path / "target" / STAMP / set_id / "databases" / "hosting.bak").exists()
    assert not list((tmp_path / "target").rglob("*.partial-*"))
    assert len(result.backlog) == 1 and result.copied == result.wanted - 1


def test_reads_fall_back_to_a_copy_when_the_primary_object_fails_verification(primary, tmp_path, caplog):
    # Given a set mirrored to a target, then corrupted on the primary
    set_id = make_set(primary, 1)
    target = LocalStore(tmp_path / "target")
    sync(primary.backend, target, STAMP, KEEP_ALL)
    key = f"{STAMP}/{set_id}/databases/hosting.bak"
    victim = tmp_path / "primary" / key
    data = bytearray(victim.read_bytes())
    data[-1] ^= 1
    victim.write_bytes(bytes(data))
    store = ArtifactStore(FallbackStore(primary.backend, [("dr-site", target)], expected=expected))
    # When the artifact is read through the fallback store
    out = _Sink()
    with caplog.at_level(logging.WARNING, "appsvc_dr.storage.fallback"):
        got = store.get(key, out)
    # Then the good copy was read from the target, and the log says so and why
    assert bytes(out.data) == b"data " + set_id.encode() and got.key == key
    assert any("mirror target 'dr-site'" in r.getMessage() and "fails verification" in r.getMessage()
               for r in caplog.records)


def test_listing_and_reading_survive_a_primary_that_lost_everything(primary, tmp_path):
    # Given a set mirrored to a target, and the primary's folder then removed entirely
    set_id = make_set(primary, 1)
    target = LocalStore(tmp_path / "target")
    sync(primary.backend, target, STAMP, KEEP_ALL)
    import shutil
    shutil.rmtree(tmp_path / "primary")
    fallback = FallbackStore(LocalStore(tmp_path / "primary", create=False), [("dr-site", target)],
                             expected=expected)
    # When the stamp is listed and an artifact read
    keys = [i.key for i in fallback.list(f"{STAMP}/")]
    out = _Sink()
    ArtifactStore(fallback).get(f"{STAMP}/{set_id}/databases/hosting.bak", out)
    # Then both come from the copy
    assert f"{STAMP}/{set_id}/complete.json" in keys and bytes(out.data) == b"data " + set_id.encode()


def test_the_worker_reports_each_target_and_retries_a_target_that_is_down(primary, tmp_path):
    # Given a good target and one whose directory does not exist (a share that is not mounted)
    set_id = make_set(primary, 1)
    good, down = LocalStore(tmp_path / "good"), LocalStore(tmp_path / "missing", create=False)
    metrics = Metrics()
    registry = metrics.registry
    handler = MirrorHandler(primary.backend, [Target(_target("good"), good, KEEP_ALL),
                                              Target(_target("down"), down, KEEP_ALL)],
                            timedelta(days=7), MirrorGauges(metrics))
    event = _stored(set_id)
    # When the worker handles artifact-stored
    with pytest.raises(TransientError) as raised:
        handler(event, _ctx())
    # Then the good target got everything, and the job is retried (until retry_for has passed) for the other
    assert compare(primary.backend, good, STAMP, KEEP_ALL).missing == []
    assert "down" in raised.value.message and raised.value.until == event.occurred_at + timedelta(days=7)
    assert registry.get_sample_value("appsvc_dr_mirror_backlog", {"target": "good"}) == 0
    assert registry.get_sample_value("appsvc_dr_mirror_backlog", {"target": "down"}) > 0
    assert registry.get_sample_value("appsvc_dr_mirror_lag_seconds", {"target": "down"}) > 0
    # And once the target is back, the redelivered event catches it up and says so per target
    (tmp_path / "missing").mkdir()
    out = handler(event, _ctx())
    assert [(e.type, e.payload.target, e.payload.backlog) for e in out] == [
        ("artifact-mirrored", "good", 0), ("artifact-mirrored", "down", 0)]
    assert out[1].payload.copied == out[1].payload.objects > 0 and out[0].payload.copied == 0
    assert registry.get_sample_value("appsvc_dr_mirror_lag_seconds", {"target": "down"}) == 0


class _Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, chunk) -> int:
        self.data += chunk
        return len(chunk)


def _target(name: str):
    from workers.mirror.settings import MirrorTarget
    return MirrorTarget(name=name, kind="local")


def _stored(set_id: str) -> ArtifactStored:
    return ArtifactStored(source="test", stamp=STAMP, correlation_id=set_id, payload=ArtifactStoredPayload(
        key=f"{STAMP}/{set_id}/databases/hosting.bak", store="file:///x", component="databases", name="hosting.bak",
        plaintext_size=1, plaintext_sha256="0" * 64, stored_size=1, stored_sha256="0" * 64, compressed=False,
        encrypted=False, verified_by="stat", duration_seconds=0))


def _ctx() -> JobContext:
    return JobContext("mirror", "k", 0, logging.LoggerAdapter(logging.getLogger("test"), {}), threading.Event())



def test_a_target_applies_its_own_retention_once_a_set_completed(primary, tmp_path):
    # Given a target that keeps one set and already holds an older one
    older = make_set(primary, 2)
    target = LocalStore(tmp_path / "target")
    keep_one = Policy(keep_last=1, keep_within=None, grace=timedelta(hours=6))
    sync(primary.backend, target, STAMP, keep_one)
    handler = MirrorHandler(primary.backend, [Target(_target("dr"), target, keep_one)], timedelta(days=7),
                            MirrorGauges(Metrics()), auto_retention=True)
    # When a newer set completes on the primary (which keeps both) and the worker hears of it
    newer = make_set(primary, 1)
    out = handler(_completed(newer), _ctx())
    # Then the target got the newer set and deleted the older one; the primary still has both
    assert {i.key.split("/")[1] for i in target.list(f"{STAMP}/")} == {newer}
    assert {i.key.split("/")[1] for i in primary.backend.list(f"{STAMP}/")} == {older, newer}
    assert out[0].payload.backlog == 0 and out[0].payload.copied > 0


def _completed(set_id: str) -> BackupSetCompleted:
    return BackupSetCompleted(source="test", stamp=STAMP, correlation_id=set_id, payload=BackupSetCompletedPayload(
        components=("secrets", "databases"), artifacts=2, stored_bytes=10, completed_at=utcnow()))


def test_a_store_that_will_not_fit_the_next_set_is_warned_about_and_exported(primary, tmp_path):
    # Given two complete sets on a primary limited to a quota a little above what they take
    for days in (2, 1):
        make_set(primary, days)
    used = sum(i.size for i in primary.backend.list(""))
    metrics = Metrics()
    watch = CapacityWatch([Watched("primary", primary.backend, used + 10, 7)], metrics, "mirror")
    handler = MirrorHandler(primary.backend, [], timedelta(days=7), MirrorGauges(metrics), capacity=watch)
    set_id = new_backup_set_id()
    due = BackupDue(source="test", stamp=STAMP, correlation_id=set_id, payload=BackupDuePayload(
        backup_set_id=set_id, components=("secrets", "databases"), reason="schedule"))
    # When the worker hears the next set is due
    out = handler.before_set(due, _ctx())
    # Then it warns (job-failed, severity warning) that the next set will not fit, with the sizing and the fix
    assert [(e.type, e.payload.severity, e.payload.error_class) for e in out] == [
        ("job-failed", "warning", "StoreAlmostFull")]
    assert "will not fit the next backup set of stamp1" in out[0].payload.message
    assert re.search(r"7 sets × ~[\d.]+ KB = [\d.]+ KB needed, 0.0 KB free \(statvfs\+quota\)", out[0].payload.message)
    assert "quota" in out[0].payload.hint
    # And the free, used and forecast bytes are exported per store
    sample = metrics.registry.get_sample_value
    assert sample("appsvc_dr_store_free_bytes", {"target": "primary"}) == 10
    assert sample("appsvc_dr_store_used_bytes", {"target": "primary", "stamp": STAMP}) == used
    assert sample("appsvc_dr_store_next_set_bytes", {"target": "primary"}) > 10
    # And with room for many more sets, nothing is said
    roomy = CapacityWatch([Watched("primary", primary.backend, None, 7)], Metrics(), "mirror")
    assert roomy.check(due, "before") == []


def test_the_forecast_counts_what_a_set_adds_outside_its_folder(primary, tmp_path):
    # Given one set and a file-share pack stored after it (outside the set's folder)
    set_id = make_set(primary, 1)
    in_set = sum(i.size for i in primary.backend.list(f"{STAMP}/{set_id}/"))
    primary.backend.put(f"{STAMP}/fileshare/packs/p1", io.BytesIO(b"x" * 5000), size=5000)
    # When the stamp is forecast on the local volume (statvfs)
    result = forecast(primary.backend, STAMP, 7, measure(primary.backend))
    # Then the pack counts toward the set, and the volume's free space is known
    assert result.recent_sizes == (in_set + 5000,) and result.space.measured_by == "statvfs"
    assert result.space.free and result.sets_fit and result.fits_next
    assert re.match(r"stamp1: 7 sets × ~[\d.]+ KB = [\d.]+ KB needed, [\d.]+ [GMK]B free \(statvfs\); about \d+ "
                    r"more set\(s\) fit$", result.describe())


def test_the_cli_reads_and_prunes_one_copy_with_store_and_its_own_policy(primary, tmp_path, monkeypatch, capsys):
    # Given three sets on the primary, mirrored to a target "dr" that keeps two (its own keep_last)
    sets = [make_set(primary, days) for days in (3, 2, 1)]
    sync(primary.backend, LocalStore(tmp_path / "dr"), STAMP, KEEP_ALL)
    monkeypatch.setenv("APPSVC_DR_STORE__LOCAL_PATH", str(tmp_path / "primary"))
    monkeypatch.setenv("APPSVC_DR_MIRROR__TARGETS", json.dumps(
        [{"name": "dr", "kind": "local", "local_path": str(tmp_path / "dr"), "keep_last": 2}]))
    # When retention is applied to the target alone
    assert main(["--store", "dr", "retention", "apply", "--stamp", STAMP]) == 0
    out = capsys.readouterr().out
    # Then the target keeps its newest two and the primary all three
    assert "keep the newest 2 complete set(s)" in out and f"delete {sets[0]}" in out
    assert {i.key.split("/")[1] for i in LocalStore(tmp_path / "dr").list(f"{STAMP}/")} == set(sets[1:])
    assert {i.key.split("/")[1] for i in primary.backend.list(f"{STAMP}/")} == set(sets)
    # And `artifacts list --store dr` shows the target's sets, `--store primary` the primary's
    assert main(["artifacts", "list", "--stamp", STAMP, "--json", "--store", "dr"]) == 0
    assert [r["backup_set_id"] for r in json.loads(capsys.readouterr().out)] == sets[1:]
    assert main(["--store", "primary", "artifacts", "list", "--stamp", STAMP, "--json"]) == 0
    assert [r["backup_set_id"] for r in json.loads(capsys.readouterr().out)] == sets
    # And an unknown copy is refused with the names that exist
    assert main(["--store", "nope", "artifacts", "list", "--stamp", STAMP]) == 2
    assert "no mirror target named 'nope'" in capsys.readouterr().err
