"""Each mirror target's own retention of the data backup sets share — the file-share repository (packs, index,
snapshots) and Function Apps blob packs — on real stores: the primary and an Object-Locked target on moto (S3
over HTTP), a short-retention target on smbd. A target keeping fewer sets never holds their snapshots or packs;
one keeping more keeps every pack its snapshots need after the primary prunes; its own policy then frees what
the primary pruned, never a locked object (it says until when), and what stays restores byte for byte."""
from __future__ import annotations

import io
import json
import logging
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from tests.integration.test_object_lock import locked_store
from tests.unit.certs import make_cert
from tests.unit.test_fileshare_prune import assert_restores, fs_settings, repo_for
from tests.unit.test_fileshare_trees import BASE_NS, copy_tree, make_tree, write
from tests.unit.test_mirror import _target
from tests.unit.test_retention import STAMP, make_set
from workers.artifacts.retention import apply_retention
from workers.artifacts.service import ArtifactStore
from workers.fileshare.handler import commit
from workers.fileshare.localtree import LocalTree
from workers.fileshare.sync import Sync
from workers.middleware.metrics import Metrics
from workers.mirror.handler import MirrorGauges, MirrorHandler, Target
from workers.mirror.settings import MirrorTarget
from workers.mirror.sync import Policy, compare
from workers.repository.forget import Policy as SnapshotPolicy, forget
from workers.repository.prune import Pruner
from workers.repository.repo import Repository
from workers.storage.codec import KeyRing, load_certificate
from workers.storage.factory import build_store
from workers.storage.s3 import S3Store

pytestmark = pytest.mark.integration
MiB = 1 << 20
FUNCS = f"{STAMP}/functions-blobs/acct"


def keep(n: int) -> Policy:
    return Policy(keep_last=n, keep_within=None, grace=timedelta(hours=6))


def _put_json(store: ArtifactStore, key: str, body: dict) -> None:
    data = json.dumps(body).encode()
    ArtifactStore(store.backend, certificate=None).put(key, lambda: io.BytesIO(data))


def make_history(tmp_path, store: ArtifactStore) -> tuple[list[str], dict]:
    """Three complete sets (3, 2 and 1 days old), each with a file-share snapshot s1..s3 of a changing tree and a
    Function Apps account whose index names a pack shared by all sets and one pack of its own."""
    make_tree(tmp_path / "src", big=MiB)
    shared = f"{FUNCS}/packs/{'0' * 32}"
    store.put(shared, lambda: io.BytesIO(b"shared blob bytes"))
    sets, copies = [], {}
    for i, days in enumerate((3, 2, 1), 1):
        set_id = make_set(store, days)
        if i > 1:
            (tmp_path / f"src/unique/gen{i - 1}.bin").unlink()
        write(tmp_path / "src", f"unique/gen{i}.bin", uuid.uuid4().bytes * 20_000, BASE_NS + i * 10**9)
        repo = repo_for(store, tmp_path)
        commit(repo, Sync(fs_settings(tmp_path), repo, LocalTree(tmp_path / "src")).run(f"s{i}", STAMP, set_id, None))
        copies[f"s{i}"] = copy_tree(tmp_path / "src", tmp_path / f"then-s{i}")
        own = f"{FUNCS}/packs/{i:032x}"
        store.put(own, lambda i=i: io.BytesIO(f"blob of set {i}".encode()))
        _put_json(store, f"{FUNCS}/index/{set_id}.json", {"format": 1, "blobs": {
            "b0": ["e0", shared, 0, 17, "0" * 64], f"b{i}": [f"e{i}", own, 0, 13, "1" * 64]}})
        _put_json(store, f"{FUNCS}/summary/{set_id}.json", {"set": set_id})
        sets.append(set_id)
    return sets, copies


def keys_of(backend, prefix: str) -> set[str]:
    return {i.key for i in backend.list(prefix)}


def snapshots(backend) -> set[str]:
    return {k.split("/")[-1].split(".")[0] for k in keys_of(backend, f"{STAMP}/fileshare/snapshots/")}


def handler_for(primary, targets: list[Target]) -> MirrorHandler:
    handler = MirrorHandler(primary, targets, timedelta(days=7), MirrorGauges(Metrics()), auto_retention=True)
    handler.stamps.add(STAMP)
    return handler


def test_each_target_keeps_its_own_sets_snapshots_and_packs_and_frees_what_the_primary_pruned(
        tmp_path, s3_server, smb_server, caplog):
    cert, key = make_cert("mirror-retention").write(tmp_path)
    keys = KeyRing.from_files(keys=[key])
    primary = S3Store(s3_server.endpoint, s3_server.access_key, s3_server.secret_key,
                      f"primary-{uuid.uuid4().hex[:8]}", region=s3_server.region, secure=False)
    store = ArtifactStore(primary, certificate=load_certificate(cert))
    sets, copies = make_history(tmp_path, store)
    # Given an SMB target keeping 1 set and a locked S3 target (Object Lock, 25 s) keeping all 3
    smb_settings = MirrorTarget(name="dr-smb", kind="smb", smb_path=smb_server.unc(f"keep1-{uuid.uuid4().hex[:6]}"),
                                smb_username=smb_server.username, smb_password=smb_server.password,
                                smb_port=smb_server.port)
    smb = build_store(smb_settings.store_settings())
    locked = locked_store(s3_server, timedelta(seconds=25))
    targets = [Target(smb_settings, smb, keep(1)), Target(_target("dr-s3"), locked, keep(3))]
    # When the mirror's timer reconciles both targets
    handler_for(primary, targets).catch_up()
    # Then the SMB target holds the newest set only: its snapshot, its functions index, summary and packs
    assert {k.split("/")[1] for k in keys_of(smb, f"{STAMP}/") if k.split("/")[1] in sets} == {sets[2]}
    assert snapshots(smb) == {"s3"}
    funcs = {k.rsplit("/", 2)[-2] + "/" + k.rsplit("/", 1)[-1].split(".")[0] for k in keys_of(smb, FUNCS + "/")}
    assert funcs == {f"index/{sets[2]}", f"summary/{sets[2]}", f"packs/{'0' * 32}", f"packs/{3:032x}"}
    assert compare(primary, smb, STAMP, keep(1)).missing == []
    assert_restores(ArtifactStore(smb), tmp_path, copies, ["s3"], "smb", keys)
    # And the S3 target holds everything
    assert keys_of(locked, f"{STAMP}/") == keys_of(primary, f"{STAMP}/")

    # When the primary keeps only the newest set: its retention, forget, and a prune with the key
    apply_retention(primary, STAMP, keep_last=1)
    forget(Repository(store, STAMP), SnapshotPolicy(keep_last=1))
    report = Pruner(Repository(store, STAMP), keys).run()
    pruned = {f"{STAMP}/fileshare/packs/{p}" for p in report.packs_deleted}
    assert pruned and snapshots(primary) == {"s3"}
    caplog.set_level(logging.INFO, "appsvc_dr.mirror")
    handler_for(primary, targets).catch_up()
    # Then the S3 target (keeping 3 sets) still holds every pack the primary pruned: s1 restores from it alone
    assert pruned <= keys_of(locked, f"{STAMP}/fileshare/packs/") and snapshots(locked) == {"s1", "s2", "s3"}
    assert_restores(ArtifactStore(locked), tmp_path, copies, ["s1", "s2", "s3"], "s3-long", keys)
    assert "snapshot(s) the primary forgot" in caplog.text

    # When the S3 target's own policy becomes 1 set too, while its objects are still locked
    targets[1] = Target(_target("dr-s3"), locked, keep(1))
    caplog.clear()
    handler_for(primary, targets).catch_up()
    # Then nothing locked was deleted, and the log says until when
    assert pruned <= keys_of(locked, f"{STAMP}/fileshare/packs/") and snapshots(locked) == {"s1", "s2", "s3"}
    assert "locked until" in caplog.text
    # When the locks have expired and the timer runs again
    until = max(locked.stat(k).retain_until for k in keys_of(locked, f"{STAMP}/"))
    time.sleep(max(0.0, (until - datetime.now(timezone.utc)).total_seconds()) + 1)
    handler_for(primary, targets).catch_up()
    # Then the S3 target holds what the primary holds of the repository, sets and functions data — no more
    for prefix in (f"{STAMP}/fileshare/", f"{FUNCS}/"):
        assert keys_of(locked, prefix) == keys_of(smb, prefix) == keys_of(primary, prefix) - {
            k for k in keys_of(primary, prefix) if sets[0] in k or sets[1] in k or f"{1:032x}" in k
            or f"{2:032x}" in k}
    assert not pruned & keys_of(locked, f"{STAMP}/")
    # And what stays restores byte for byte from each target
    assert_restores(ArtifactStore(locked), tmp_path, copies, ["s3"], "s3-short", keys)
    assert_restores(ArtifactStore(smb), tmp_path, copies, ["s3"], "smb-after", keys)
