"""Backup sets against real storage (a local directory and a moto S3 server): retention decides completeness
from the store, keeps young incomplete sets, warns when it deletes, and ignores sets dated in the future; the
newest-set lookups (drill, secrets --latest) ignore future-dated names too."""
from __future__ import annotations

import io
import logging
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from contracts import new_backup_set_id
from tests.unit.certs import make_cert
from workers.artifacts.setmanifest import artifact_key
from workers.artifacts.retention import apply_retention
from workers.artifacts.service import ArtifactStore
from workers.artifacts.sets import Plan, write_marker, write_plan
from workers.drill.run import candidates, choose
from workers.secrets.versions import latest, version_id, version_key
from workers.storage.codec import load_certificate
from workers.storage.local import LocalStore
from workers.storage.s3 import S3Store

pytestmark = pytest.mark.integration
STAMP = "stamp1"
COMPONENTS = ("secrets", "databases", "fileshare")
NOW = datetime.now(timezone.utc)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ArtifactStore:
    if request.param == "local":
        yield ArtifactStore(LocalStore(tmp_path / "store"), compress=False)
        return
    s3_server = request.getfixturevalue("s3_server")
    backend = S3Store(s3_server.endpoint, s3_server.access_key, s3_server.secret_key,
                      f"sets-{uuid.uuid4().hex[:8]}", secure=False)
    yield ArtifactStore(backend, compress=False)
    s3_server.reset()


def planned(store: ArtifactStore, hours_ago: float, *, set_id: str | None = None) -> str:
    """A set the catalog planned ``hours_ago`` (secrets, databases, fileshare), nothing stored yet."""
    when = NOW - timedelta(hours=hours_ago)
    set_id = set_id or new_backup_set_id(when)
    write_plan(store.backend, Plan(STAMP, set_id, COMPONENTS, "schedule", when))
    return set_id


def upload(store: ArtifactStore, set_id: str, *components: str) -> None:
    """Store artifacts of the set the way the upload worker does (artifact + record)."""
    for component in components or COMPONENTS:
        store.put(artifact_key(STAMP, set_id, component, f"{component}.bin"),
                  lambda c=component: io.BytesIO(f"{set_id}/{c}".encode()))


def mark_complete(store: ArtifactStore, set_id: str) -> None:
    """What the catalog writes when it has heard of every artifact of the set."""
    write_marker(store.backend, STAMP, set_id, {"completed_at": NOW.isoformat()})


def sets_left(store: ArtifactStore) -> set[str]:
    return {info.key.split("/")[1] for info in store.backend.list(f"{STAMP}/")}


def test_a_fully_stored_set_survives_when_a_newer_set_completes_first_in_the_catalog(store, caplog):
    # Given two planned sets whose artifacts are all stored, the catalog behind: it has only heard of the newer
    older, newer = planned(store, 2), planned(store, 1)
    upload(store, older)
    upload(store, newer)
    mark_complete(store, newer)
    # When the catalog applies retention for the newer set (keep two complete sets, grace 1 minute: too short to help)
    with caplog.at_level(logging.WARNING):
        plan = apply_retention(store.backend, STAMP, keep_last=2, incomplete_grace=timedelta(minutes=1))
    # Then the older set counts as complete from what the store holds, and nothing is deleted
    assert plan.delete == [] and plan.sets[older].complete and sets_left(store) == {older, newer}
    assert plan.reasons[older] == "one of the newest 2 complete sets"
    assert "retention: deleted" not in caplog.text


def test_an_incomplete_young_set_survives_and_an_old_one_is_deleted_with_a_warning(store, caplog):
    # Given an old incomplete set (its databases never came), a young incomplete one, and a newer complete set
    old, young = planned(store, 30), planned(store, 3)
    upload(store, old, "secrets", "fileshare")
    upload(store, young, "secrets")
    newest = planned(store, 1)
    upload(store, newest)
    mark_complete(store, newest)
    # When retention runs with the default grace (6 h)
    with caplog.at_level(logging.WARNING, logger="appsvc_dr.retention"):
        plan = apply_retention(store.backend, STAMP, keep_last=7)
    # Then the young set is kept (it may still complete), the old one is deleted entirely, at WARNING, with its rule
    assert plan.delete == [old] and plan.incomplete_deleted == [old]
    assert "younger than the 6h grace period" in plan.reasons[young]
    assert sets_left(store) == {young, newest}
    [record] = [r for r in caplog.records if old in r.getMessage()]
    assert record.levelno == logging.WARNING and "INCOMPLETE set" in record.getMessage()
    assert f"older than the newest complete set {newest} and than the 6h grace period" in record.getMessage()


def test_future_dated_sets_never_become_newest_and_no_genuine_set_is_deleted(store, caplog):
    # Given two genuine complete sets and seven forged "complete" sets dated in the future (plan, artifacts, marker)
    genuine = [planned(store, 48), planned(store, 24)]
    for set_id in genuine:
        upload(store, set_id)
        mark_complete(store, set_id)
    forged = []
    for year in range(2990, 2997):
        set_id = planned(store, 0, set_id=new_backup_set_id(datetime(year, 1, 1, tzinfo=timezone.utc)))
        upload(store, set_id)
        mark_complete(store, set_id)
        forged.append(set_id)
    # And one whose id looks current but whose plan claims a future request time
    sneaky = new_backup_set_id(NOW)
    write_plan(store.backend, Plan(STAMP, sneaky, COMPONENTS, "schedule", NOW + timedelta(days=400)))
    upload(store, sneaky)
    mark_complete(store, sneaky)
    # When retention keeps only the newest complete set
    with caplog.at_level(logging.WARNING, logger="appsvc_dr.retention"):
        plan = apply_retention(store.backend, STAMP, keep_last=0)
    # Then the newest *genuine* set is the one always kept; the forged ones are ignored with a warning, not counted
    assert plan.reasons[genuine[1]] == "newest complete set (always kept)"
    assert plan.delete == [genuine[0]]
    assert all(plan.reasons[s].startswith("dated in the future") for s in (*forged, sneaky))
    assert sum("dated in the future" in r.getMessage() for r in caplog.records) == 8
    # And the drill's newest-complete lookup picks the genuine set too
    assert choose(candidates(store.backend, STAMP), STAMP).set_id == genuine[1]


def test_the_newest_secrets_version_is_never_a_future_dated_one(store, tmp_path, caplog):
    cert, _ = make_cert("latest").write(tmp_path)
    secrets = ArtifactStore(store.backend, certificate=load_certificate(cert))
    # Given a genuine version and one dated 9999 by whoever wrote it into the store
    for when, body in ((NOW - timedelta(hours=1), b'{"genuine": true}'), (datetime(9999, 1, 1, tzinfo=timezone.utc),
                                                                           b'{"forged": true}')):
        vid = version_id(when, "ab" * 32)
        secrets.put(version_key(STAMP, vid), lambda b=body: io.BytesIO(b), require_encryption=True)
    # When the latest version is looked up (restore secrets --latest, and what new backup sets link to)
    with caplog.at_level(logging.WARNING):
        newest = latest(secrets, STAMP)
    # Then it is the genuine one, and the forged one is reported
    assert newest.rotated_at < NOW and "dated in the future: ignored" in caplog.text
