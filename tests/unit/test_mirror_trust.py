"""The mirror worker gets the encryption section's Trust: with verify keys configured, a forged completion marker,
artifact record or Function Apps index (on a target, or on the primary and mirrored from there) never makes it
delete a genuine signed set or shared data a kept set still references. Objects are still copied as stored."""
from __future__ import annotations

import io
import json
import logging

import pytest

from tests.unit.certs import signing_settings
from tests.unit.test_mirror import _completed, _ctx, files
from tests.unit.test_retention import STAMP, make_set
from workers.artifacts.functionspacks import FOLDER
from workers.artifacts.service import ArtifactStore
from workers.artifacts.settings import RetentionSettings
from workers.artifacts.sets import set_prefix
from workers.mirror.handler import MirrorHandler, build_mirror_worker
from workers.mirror.settings import MirrorSettings, MirrorTarget
from workers.mirror.shared import plan_target
from workers.storage.local import LocalStore
from workers.storage.settings import EncryptionSettings, StoreSettings
from workers.storage.signing import Trust, attach

ACCOUNT = f"{STAMP}/{FOLDER}/site1"


@pytest.fixture
def site(tmp_path):
    """A signing primary (the other workers' view of it), and a mirror worker built from settings whose one
    target keeps the newest complete set."""
    keys = signing_settings(tmp_path)
    primary = ArtifactStore(attach(LocalStore(tmp_path / "primary"),
                                   Trust.from_files(keys["signing_key"], keys["verify_keys"])), compress=False)
    spec = build_mirror_worker(
        mirror=MirrorSettings(targets=[MirrorTarget(name="dr", kind="local", local_path=tmp_path / "dr",
                                                    keep_last=1)]),
        store=StoreSettings(kind="local", local_path=tmp_path / "primary"),
        retention=RetentionSettings(auto=True), encryption=EncryptionSettings(**keys))
    handler: MirrorHandler = spec.target  # type: ignore[assignment]
    yield primary, handler, tmp_path
    handler.close()


def forge(root, key: str, data: dict) -> None:
    """Written straight into a store by someone with write access to it, without the signing key."""
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_a_forged_marker_on_the_target_never_makes_its_retention_delete_the_genuine_set(site, caplog):
    primary, handler, tmp_path = site
    # Given a genuine signed set mirrored to a target that keeps one set
    genuine = make_set(primary, 2)
    handler(_completed(genuine), _ctx())
    # And an unsigned completion marker written into a made-up newer set folder on the target
    forged = make_set(ArtifactStore(LocalStore(tmp_path / "scratch"), compress=False), 1)
    forge(tmp_path / "dr", set_prefix(STAMP, forged) + "complete.json", {"format": 1, "completed_at": "2026-11-21"})
    # When the worker hears of the set again (redelivery) and applies the target's retention
    with caplog.at_level(logging.WARNING):
        handler(_completed(genuine), _ctx())
    # Then the genuine set is still on the target, whole, and the forged marker was reported
    assert (tmp_path / "dr" / set_prefix(STAMP, genuine) / "complete.json").exists()
    assert (tmp_path / "dr" / set_prefix(STAMP, genuine) / "databases" / "hosting.bak").exists()
    assert f"ignoring {set_prefix(STAMP, forged)}complete.json" in caplog.text


def test_forged_records_mirrored_from_the_primary_never_complete_a_set_that_pushes_out_the_genuine_one(site):
    primary, handler, tmp_path = site
    # Given a genuine complete set mirrored to the target, and a newer genuine set whose database never arrived
    genuine = make_set(primary, 2)
    handler(_completed(genuine), _ctx())
    failed = make_set(primary, 1, complete=False)
    # And an unsigned database artifact and record written into the newer set on the primary
    unsigned = ArtifactStore(LocalStore(tmp_path / "primary"), compress=False)
    unsigned.put(f"{set_prefix(STAMP, failed)}databases/hosting.bak", lambda: io.BytesIO(b"forged"))
    # When the worker mirrors the stamp again and applies the target's retention
    handler(_completed(genuine), _ctx())
    # Then everything was copied as stored, the forged objects too
    assert files(tmp_path / "dr") == files(tmp_path / "primary")
    # And the genuine complete set is kept: the forged record completes nothing
    assert (tmp_path / "dr" / set_prefix(STAMP, genuine) / "complete.json").exists()


def _functions(store: ArtifactStore, set_id: str, packs: list[str]) -> None:
    blobs = {f"blob-{p}": ["etag", f"{ACCOUNT}/packs/{p}", 0, 1, "0" * 64] for p in packs}
    body = json.dumps({"format": 1, "blobs": blobs}).encode()
    store.put(f"{ACCOUNT}/index/{set_id}.json", lambda: io.BytesIO(body), replace_uncommitted=True)


def test_a_forged_functions_index_mirrored_from_the_primary_never_prunes_packs_a_kept_set_needs(site, caplog):
    primary, handler, tmp_path = site
    # Given a set whose Function Apps index names packs p1 and p2, mirrored to the target
    older = make_set(primary, 2)
    for pack in ("p1", "p2"):
        primary.put(f"{ACCOUNT}/packs/{pack}", lambda p=pack: io.BytesIO(f"pack {p}".encode()))
    _functions(primary, older, ["p1", "p2"])
    handler(_completed(older), _ctx())
    assert (tmp_path / "dr" / ACCOUNT / "packs" / "p1").exists()
    # And a newer set whose genuine index names p1, then replaced on the primary by an unsigned one naming nothing
    newer = make_set(primary, 1)
    _functions(primary, newer, ["p1"])
    _functions(ArtifactStore(LocalStore(tmp_path / "primary"), compress=False), newer, [])
    # When the timer reconciles the stamp and applies the target's retention to sets and shared data
    with caplog.at_level(logging.WARNING):
        handler.catch_up()
    # Then the older set is gone from the target, but no pack is: the newer set's index cannot be trusted
    assert not (tmp_path / "dr" / set_prefix(STAMP, older) / "complete.json").exists()
    assert (tmp_path / "dr" / ACCOUNT / "packs" / "p1").exists()
    assert (tmp_path / "dr" / ACCOUNT / "packs" / "p1.record.json").exists()
    assert f"{ACCOUNT}/index/{newer}.json" in caplog.text


@pytest.fixture
def stores(tmp_path):
    """A primary and a target with the mirror worker's Trust, and an unsigned writer to each (a forger)."""
    keys = signing_settings(tmp_path)
    trust = Trust.from_files(keys["signing_key"], keys["verify_keys"])
    primary, target = (attach(LocalStore(tmp_path / name), trust) for name in ("primary", "dr"))
    return primary, target, {name: ArtifactStore(LocalStore(tmp_path / name), compress=False)
                             for name in ("primary", "dr")}


PACK = f"{STAMP}/fileshare/packs/{'ab' * 16}"


def test_a_snapshot_whose_summary_cannot_be_trusted_keeps_every_pack_on_the_target(stores):
    primary, target, forger = stores
    # Given a target holding a pack the primary no longer has, and a snapshot the primary forgot whose summary
    # on the target was replaced by an unsigned one
    ArtifactStore(target, compress=False).put(PACK, lambda: io.BytesIO(b"pack bytes"))
    body = json.dumps({"snapshot_id": "s0", "backup_set_id": "20261120T120000Z-0a1b2c3d"}).encode()
    forger["dr"].put(f"{STAMP}/fileshare/snapshots/s0.summary.json", lambda: io.BytesIO(body))
    # When the target's shared data is planned / Then the pack stays: the snapshot may need it
    plan = plan_target(primary, target, STAMP)
    assert plan.delete == [] and "keeps 1 snapshot(s) the primary forgot (s0)" in " ".join(plan.notes)


def test_an_index_object_on_the_primary_that_cannot_be_trusted_stops_pruning_packs_on_the_target(stores, tmp_path):
    primary, target, forger = stores
    # Given a target holding a pack the primary no longer has, and an index object on the primary that is forged
    ArtifactStore(target, compress=False).put(PACK, lambda: io.BytesIO(b"pack bytes"))
    forged = tmp_path / "primary" / STAMP / "fileshare" / "index" / ("cd" * 32)
    forged.parent.mkdir(parents=True)
    forged.write_bytes(b"not an index written by a worker")
    # When the target's shared data is planned / Then the pack stays: which packs the primary needs is not known
    plan = plan_target(primary, target, STAMP)
    assert plan.delete == [] and "cannot be read or trusted" in " ".join(plan.notes)


def test_a_forged_marker_on_the_primary_never_keeps_the_genuine_set_off_a_target(site):
    from tests.unit.test_retention import NOW
    from workers.mirror.handler import policy_for
    from workers.mirror.sync import wanted_objects
    primary, handler, tmp_path = site
    # Given a genuine signed complete set on the primary, and an unsigned completion marker written into a
    # made-up newer set folder there
    genuine = make_set(primary, 2)
    forged = make_set(ArtifactStore(LocalStore(tmp_path / "scratch"), compress=False), 1)
    forge(tmp_path / "primary", set_prefix(STAMP, forged) + "complete.json", {"format": 1, "completed_at": "x"})
    # When the objects a target keeping one set should hold are chosen
    policy = policy_for(MirrorTarget(name="dr", kind="local", local_path=tmp_path / "dr", keep_last=1),
                        RetentionSettings(auto=True))
    wanted = {o.key for o in wanted_objects(primary.backend, STAMP, policy, NOW)}
    # Then the genuine set is among them: the forged marker counts as no complete set
    assert f"{set_prefix(STAMP, genuine)}databases/hosting.bak" in wanted
    assert f"{set_prefix(STAMP, genuine)}complete.json" in wanted

