"""S3 Object Lock on a real S3 API (moto over HTTP): objects written with a retain-until date, retention that never
tries to delete a locked object and says when it can, mirroring into a locked bucket, and `config check
--connect` checking the bucket's Object Lock and versioning."""
from __future__ import annotations

import io
import re
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from tests.fixtures.rabbit import run_cli, settings_for
from tests.unit.test_retention import STAMP, make_set
from workers.artifacts.retention import apply_retention
from workers.artifacts.service import ArtifactStore
from workers.mirror.sync import Policy, compare, sync
from workers.storage.base import ObjectLocked
from workers.storage.s3 import S3Store

pytestmark = pytest.mark.integration


def locked_store(server, lock_for: timedelta, bucket: str | None = None, mode: str = "GOVERNANCE") -> S3Store:
    return S3Store(server.endpoint, server.access_key, server.secret_key, bucket or f"locked-{uuid.uuid4().hex[:8]}",
                   region=server.region, secure=False, lock_mode=mode, lock_for=lock_for)


def test_retention_never_deletes_a_locked_set_and_says_when_it_can(s3_server):
    # Given three complete sets in a bucket with Object Lock, each object locked for 4 seconds
    backend = locked_store(s3_server, timedelta(seconds=4))
    store = ArtifactStore(backend, compress=False)
    sets = [make_set(store, days) for days in (3, 2, 1)]
    before = [i.key for i in backend.list()]
    assert all(backend.stat(k).retain_until > datetime.now(timezone.utc) for k in before)
    # When retention keeps only the newest set
    plan = apply_retention(backend, STAMP, keep_last=1)
    # Then nothing was deleted: the two older sets are reported locked, with the date they become deletable
    assert [i.key for i in backend.list()] == before and plan.deleted_objects == 0
    assert set(plan.locked) == set(sets[:2]) and plan.delete == [] and set(plan.keep) == set(sets)
    assert all(now_plus(0) < until <= now_plus(5) for until in plan.locked.values())
    lines = "\n".join(plan.describe())
    assert lines.count("but locked (S3 Object Lock) until") == 2 and "deleted by the first run after that" in lines
    assert "due for deletion (complete, beyond the newest 1 complete sets)" in lines
    # And the backend itself refuses to delete a locked object (rather than hide it behind a delete marker)
    with pytest.raises(ObjectLocked) as refused:
        backend.delete(before[0])
    assert refused.value.until > datetime.now(timezone.utc) and "locked (S3 Object Lock) until" in refused.value.message
    # When the locks have expired, Then the next run deletes the two older sets
    time.sleep(max(0.0, (max(plan.locked.values()) - datetime.now(timezone.utc)).total_seconds()) + 0.5)
    later = apply_retention(backend, STAMP, keep_last=1)
    assert later.locked == {} and set(later.delete) == set(sets[:2]) and later.deleted_objects > 0
    assert {i.key.split("/")[1] for i in backend.list(f"{STAMP}/")} == {sets[2]}


def test_the_retention_command_reports_locked_sets(s3_server, tmp_path):
    # Given two complete sets in a locked bucket (locked for a day), configured as the primary store with lock
    bucket = f"locked-{uuid.uuid4().hex[:8]}"
    store = ArtifactStore(locked_store(s3_server, timedelta(days=1), bucket), compress=False)
    older, _ = make_set(store, 2), make_set(store, 1)
    settings = settings_for("/", store=_section(s3_server, bucket, s3_object_lock="GOVERNANCE", s3_lock_days=1))
    # When `retention apply --keep-last 1` runs
    out = run_cli(settings, "retention", "apply", "--stamp", STAMP, "--keep-last", "1")
    # Then it deletes nothing and says when the older set becomes deletable
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(rf"^keep +{older} +due for deletion .* but locked \(S3 Object Lock\) until \d{{4}}-", out.stdout,
                     re.M)
    assert "deleted 0 set(s)" in out.stdout and "1 locked (S3 Object Lock), deletable later" in out.stdout
    assert older in {i.key.split("/")[1] for i in store.backend.list(f"{STAMP}/")}


def test_a_set_mirrored_into_a_locked_bucket_is_locked_there(s3_server, tmp_path):
    # Given a set on a plain primary and a mirror target bucket with Object Lock (COMPLIANCE, 1 day)
    primary = S3Store(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, f"plain-{uuid.uuid4().hex[:8]}",
                      region=s3_server.region, secure=False)
    make_set(ArtifactStore(primary, compress=False), 1)
    target = locked_store(s3_server, timedelta(days=1), mode="COMPLIANCE")
    policy = Policy(keep_last=7, keep_within=None, grace=timedelta(hours=6))
    # When the target is synced
    result = sync(primary, target, STAMP, policy)
    # Then every object is there, verified, and locked for a day
    assert result.copied == result.wanted > 0 and not result.backlog
    assert compare(primary, target, STAMP, policy, read_data=True).missing == []
    assert all(now_plus(0.9 * 86400) < target.stat(i.key).retain_until <= now_plus(86400)
               for i in target.list(f"{STAMP}/"))


def test_config_check_connect_verifies_object_lock_and_versioning(s3_server):
    # Given a primary whose bucket has Object Lock and a mirror target configured with Object Lock whose bucket
    # was created without it
    locked = f"locked-{uuid.uuid4().hex[:8]}"
    locked_store(s3_server, timedelta(days=1), locked).check_lock()          # creates it with Object Lock
    plain = f"plain-{uuid.uuid4().hex[:8]}"
    S3Store(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, plain, region=s3_server.region,
            secure=False).exists("probe")                                  # creates it without
    target = {"name": "dr-s3", **_section(s3_server, plain, s3_object_lock="COMPLIANCE", s3_lock_days=30,
                                          s3_create_bucket=False)}
    settings = settings_for("/", store=_section(s3_server, locked, s3_object_lock="GOVERNANCE", s3_lock_days=1),
                            mirror={"targets": [target]}, retention={"keep_within": "7d"},
                            database={"engine": "postgres"})            # no SQL Server login to check here
    # When `config check --connect` runs
    out = run_cli(settings, "config", "check", "--connect")
    # Then the primary's lock is ok but too short for keep_within, and the target lacks Object Lock and versioning
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"Object Lock on primary (s3://{locked} at {s3_server.endpoint}): FAILED" in out.stdout
    assert "locked for 1 day(s), less than the 7 day(s)" in out.stdout
    assert f"Object Lock on dr-s3 (s3://{plain}" in out.stdout
    assert f"bucket '{plain}' does not have versioning enabled" in out.stdout
    assert f"bucket '{plain}' does not have Object Lock enabled" in out.stdout
    assert s3_server.secret_key not in out.stdout
    # And with a long enough lock, the primary passes
    ok = run_cli(settings.model_copy(update={"mirror": settings.mirror.model_copy(update={"targets": []}),
                                             "store": settings.store.model_copy(update={"s3_lock_days": 8})}),
                 "config", "check", "--connect")
    assert f"Object Lock on primary (s3://{locked} at {s3_server.endpoint}): ok (GOVERNANCE, 8 day(s)" in ok.stdout
    assert ok.returncode == 0, ok.stdout + ok.stderr


def _section(server, bucket: str, **extra) -> dict:
    return {"kind": "s3", "s3_endpoint": server.endpoint, "s3_access_key": server.access_key,
            "s3_secret_key": server.secret_key, "s3_bucket": bucket, "s3_region": server.region,
            "s3_secure": False, **extra}


def now_plus(seconds: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def test_forget_and_prune_never_delete_locked_snapshots_or_packs(s3_server, tmp_path):
    from minio import Minio
    from minio.retention import GOVERNANCE, Retention

    from tests.unit.test_fileshare_prune import history, repo_for
    from workers.repository.forget import Policy as SnapshotPolicy, forget
    from workers.repository.prune import Pruner
    from workers.repository.repo import Repository
    # Given three file-share snapshots in a locked bucket (each object locked for 4 seconds)
    backend = locked_store(s3_server, timedelta(seconds=4))
    store = ArtifactStore(backend)
    history(tmp_path, store, count=3)
    before = [i.key for i in backend.list()]
    # (the syncs' repository locks were written without a retention, so each sync could remove its own)
    assert not [k for k in before if "/fileshare/locks/" in k]
    # When all but the newest are forgotten while locked
    plan = forget(repo_for(store, tmp_path), SnapshotPolicy(keep_last=1))
    # Then nothing is deleted and both are reported locked, with the date
    assert plan.forget == ["s2", "s1"] and set(plan.locked) == {"s1", "s2"} and plan.deleted_objects == 0
    assert [i.key for i in backend.list()] == before
    assert sum("locked (S3 Object Lock) until" in line for line in plan.describe()) == 2
    # When the locks have expired, Then they are forgotten
    time.sleep(max(0.0, (max(plan.locked.values()) - datetime.now(timezone.utc)).total_seconds()) + 0.5)
    later = forget(repo_for(store, tmp_path), SnapshotPolicy(keep_last=1))
    assert later.locked == {} and later.deleted_objects == 8
    # Given the packs then locked again for a minute (an operator extended the retention)
    client = Minio(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, secure=False,
                   region=s3_server.region)
    packs = [i.key for i in backend.list("stamp1/fileshare/")]
    for key in packs:
        client.set_object_retention(backend.bucket, key, Retention(GOVERNANCE, now_plus(60)))
    # When the repository is pruned
    report = Pruner(Repository(store, "stamp1"), None).run()
    # Then nothing is deleted, and the report says until when the objects are locked
    assert [i.key for i in backend.list("stamp1/fileshare/")] == packs
    assert report.locked_until is not None and now_plus(50) < report.locked_until <= now_plus(61)
    assert any("nothing deleted: some of these objects are locked (S3 Object Lock) until" in line
               for line in report.lines())


def test_objects_their_writer_deletes_soon_are_never_locked(s3_server):
    # Given a bucket with Object Lock for a day
    from workers.storage.base import UNLOCKED
    backend = locked_store(s3_server, timedelta(days=1))
    # When a repository lock (metadata UNLOCKED) and an artifact are written
    backend.put("stamp1/fileshare/locks/abc.json", io.BytesIO(b"{}"), size=2, metadata=UNLOCKED)
    backend.put("stamp1/x/databases/a.bak", io.BytesIO(b"data"), size=4)
    # Then only the artifact is locked, and the lock object can be deleted at once
    assert backend.stat("stamp1/fileshare/locks/abc.json").retain_until is None
    assert backend.stat("stamp1/x/databases/a.bak").retain_until > now_plus(86000)
    backend.delete("stamp1/fileshare/locks/abc.json")
    assert not backend.exists("stamp1/fileshare/locks/abc.json")


def test_write_once_objects_keep_their_lock_choice_and_a_second_writer_is_refused(s3_server):
    # Given a bucket with Object Lock for a day
    from workers.artifacts.sets import put_once
    from workers.storage.base import UNLOCKED, ObjectExists
    backend = locked_store(s3_server, timedelta(days=1))
    # When a schedule claim (metadata UNLOCKED: pruned later) and a set's plan are written once each
    assert put_once(backend, "stamp1/schedule/db/20261203T020000Z.json", b'{"claimed_by": "a"}', metadata=UNLOCKED)
    assert put_once(backend, "stamp1/set-1/plan.json", b'{"plan": 1}')
    # Then the conditional create kept the choice: the claim is deletable, the plan locked like any artifact
    assert backend.stat("stamp1/schedule/db/20261203T020000Z.json").retain_until is None
    assert backend.stat("stamp1/set-1/plan.json").retain_until > now_plus(86000)
    # And a second writer of either is refused by the server, the first body kept
    assert not put_once(backend, "stamp1/schedule/db/20261203T020000Z.json", b'{"claimed_by": "b"}', metadata=UNLOCKED)
    with pytest.raises(ObjectExists):
        backend.put_new("stamp1/set-1/plan.json", b'{"plan": 2}')
    with backend.open("stamp1/schedule/db/20261203T020000Z.json") as stream:
        assert b'"a"' in stream.read()
    # And when the check before the write misses it (a writer racing in between), the server's refusal of the
    # conditional PUT (412) still stops the second writer
    backend.exists = lambda key: False                  # type: ignore[method-assign]
    with pytest.raises(ObjectExists):
        backend.put_new("stamp1/set-1/plan.json", b'{"plan": 3}')
    with backend.open("stamp1/set-1/plan.json") as stream:
        assert stream.read() == b'{"plan": 1}'
