"""Plans, completion markers, skip notes and drill results are signed; readers with a verify key treat a
forged, unsigned or moved one as absent (with a warning) instead of trusting it."""
from __future__ import annotations

import contextlib
import io
import json
import logging
from datetime import datetime, timezone

from tests.unit.certs import signed
from workers.artifacts.setmanifest import read_set
from workers.artifacts.service import ArtifactStore
from workers.artifacts.sets import (PLAN, Plan, read_marker, read_plan, read_skip, set_prefix, write_marker,
                                    write_plan, write_skip)
from workers.drill.results import DrillResult, marker_key, read_markers, write_marker as write_drill
from workers.storage.local import LocalStore
from workers.storage.signing import Trust, attach, trust_of

STAMP = "stamp1"
WHEN = datetime(2026, 11, 22, 12, tzinfo=timezone.utc)
SET, OTHER = "20261122T120000Z-0a1b2c3d", "20261123T120000Z-4e5f6a7b"


def raw(backend, key: str) -> dict:
    with backend.open(key) as stream:
        return json.loads(stream.read())


def put_json(backend, key: str, data: dict) -> None:
    put_bytes(backend, key, json.dumps(data).encode())


def test_plans_markers_and_skips_are_signed_and_read_back(tmp_path):
    # Given a worker with a signing key writing a plan, a marker and a skip note
    backend = signed(LocalStore(tmp_path / "store"), tmp_path)
    write_plan(backend, Plan(STAMP, SET, ("secrets", "databases"), "schedule", WHEN))
    write_marker(backend, STAMP, SET, {"completed_at": WHEN.isoformat()})
    write_skip(backend, STAMP, SET, "metering", {"database": "metering", "reason": "skipped: replica"})
    # Then each stored object carries an Ed25519 signature by the workers' key
    signature = raw(backend, set_prefix(STAMP, SET) + PLAN)["signature"]
    assert signature["alg"] == "ed25519" and signature["key_id"] == trust_of(backend).signer.key_id
    # And a reader with the verify key reads them back without the signature member
    assert read_plan(backend, STAMP, SET).components == ("secrets", "databases")
    assert read_marker(backend, STAMP, SET)["completed_at"] == WHEN.isoformat()
    assert "signature" not in read_skip(backend, STAMP, SET, "metering")


def test_a_forged_or_moved_plan_or_marker_counts_as_absent_with_a_warning(tmp_path, caplog):
    backend = signed(LocalStore(tmp_path / "store"), tmp_path)
    # Given an unsigned marker written straight into the store (anyone with store write access)
    put_json(backend, set_prefix(STAMP, OTHER) + "complete.json", {"format": 1, "completed_at": "9999-01-01"})
    # And a genuine plan copied to another set
    write_plan(backend, Plan(STAMP, SET, ("secrets",), "schedule", WHEN))
    put_json(backend, set_prefix(STAMP, OTHER) + PLAN, raw(backend, set_prefix(STAMP, SET) + PLAN))
    # When retention / the catalog read them / Then neither is trusted, each with a warning naming it
    with caplog.at_level(logging.WARNING):
        assert read_marker(backend, STAMP, OTHER) is None
        assert read_plan(backend, STAMP, OTHER) is None
    assert f"ignoring {set_prefix(STAMP, OTHER)}complete.json" in caplog.text and "is not signed" in caplog.text
    assert "does not match" in caplog.text
    # And the genuine plan still reads
    assert read_plan(backend, STAMP, SET) is not None


def test_drill_results_are_signed_and_a_forged_one_is_not_counted(tmp_path, caplog):
    backend = signed(LocalStore(tmp_path / "store"), tmp_path)
    write_plan(backend, Plan(STAMP, SET, ("secrets",), "schedule", WHEN))
    # Given a genuine drill result and a forged "passed" one
    genuine = DrillResult(STAMP, SET, "aaaa1111", WHEN, finished_at=WHEN)
    write_drill(backend, genuine)
    forged = DrillResult(STAMP, SET, "bbbb2222", WHEN, finished_at=WHEN.replace(year=2099))
    put_json(backend, marker_key(forged), {**forged.to_json(), "result": "passed"})
    assert "signature" in raw(backend, marker_key(genuine))
    # When the markers are read (the metric, `drill --report`) / Then only the genuine one counts
    with caplog.at_level(logging.WARNING):
        assert [m["drill_id"] for m in read_markers(backend, STAMP)] == ["aaaa1111"]
    assert "bbbb2222" in caplog.text


def test_without_a_verify_key_unsigned_objects_read_as_before(tmp_path):
    # Given a site that has not configured signing yet (migration): nothing signs, nothing is checked
    backend = attach(LocalStore(tmp_path / "store"), Trust())
    write_plan(backend, Plan(STAMP, SET, ("secrets",), "schedule", WHEN))
    # Then plans are written and read as before
    assert "signature" not in raw(backend, set_prefix(STAMP, SET) + PLAN)
    assert read_plan(backend, STAMP, SET).components == ("secrets",)


def test_a_set_lists_only_artifacts_whose_records_are_signed(tmp_path, caplog):
    # Given a set with one genuine artifact and a record forged into it (and one copied from another set)
    backend = signed(LocalStore(tmp_path / "store"), tmp_path)
    store = ArtifactStore(backend)
    store.put(f"{STAMP}/{SET}/databases/orders.dump", lambda: io.BytesIO(b"genuine"))
    with attach_unsigned(backend):
        store.put(f"{STAMP}/{SET}/databases/forged.dump", lambda: io.BytesIO(b"forged"))
    store.put(f"{STAMP}/{OTHER}/databases/orders.dump", lambda: io.BytesIO(b"other"))
    moved = f"{STAMP}/{SET}/databases/moved.dump"
    for suffix in ("", ".record.json"):
        put_bytes(backend, moved + suffix, read_bytes(backend, f"{STAMP}/{OTHER}/databases/orders.dump" + suffix))
    # When the set is read (catalog, retention's completeness, `artifacts list`, the drill)
    with caplog.at_level(logging.WARNING):
        found = read_set(store, STAMP, SET)
    # Then only the genuine artifact counts; the others are named in warnings
    assert [a.key for a in found.artifacts] == [f"{STAMP}/{SET}/databases/orders.dump"]
    assert "forged.dump" in caplog.text and "moved.dump" in caplog.text


@contextlib.contextmanager
def attach_unsigned(backend):
    workers = trust_of(backend)
    attach(backend, Trust())
    try:
        yield
    finally:
        attach(backend, workers)


def read_bytes(backend, key: str) -> bytes:
    with backend.open(key) as stream:
        return stream.read()


def put_bytes(backend, key: str, data: bytes) -> None:
    backend.put(key, io.BytesIO(data), size=len(data))


def test_an_unsigned_completion_marker_never_makes_retention_delete_a_genuine_set(tmp_path, caplog):
    from workers.artifacts.retention import apply_retention
    backend = signed(LocalStore(tmp_path / "store"), tmp_path)
    # Given one genuine complete set (signed plan and marker) and, written by someone with write access to the
    # store only, a newer "set" that is nothing but an unsigned complete.json
    write_plan(backend, Plan(STAMP, SET, ("secrets",), "schedule", WHEN))
    write_marker(backend, STAMP, SET, {"stamp": STAMP, "backup_set_id": SET})
    put_json(backend, set_prefix(STAMP, OTHER) + "complete.json", {"format": 1, "stamp": STAMP})
    # When retention keeping the newest complete set runs (the catalog's, after a set completes)
    with caplog.at_level(logging.WARNING):
        plan = apply_retention(backend, STAMP, keep_last=1, now=WHEN.replace(day=24))
    # Then the genuine set is kept: the forged one is no complete set
    assert SET not in plan.delete and backend.exists(set_prefix(STAMP, SET) + PLAN), plan


def test_a_set_that_does_not_verify_is_neither_counted_nor_deleted_by_retention(tmp_path, caplog):
    from workers.artifacts.retention import apply_retention
    # Given a set written before signing was enabled (unsigned plan and marker, old), then a genuine signed one
    plain = LocalStore(tmp_path / "store")
    legacy = "20261101T120000Z-11111111"
    put_json(plain, set_prefix(STAMP, legacy) + PLAN, json.loads(Plan(STAMP, legacy, ("secrets",), "schedule",
                                                                     WHEN.replace(day=1)).to_json()))
    put_json(plain, set_prefix(STAMP, legacy) + "complete.json", {"format": 1, "stamp": STAMP})
    backend = signed(plain, tmp_path)
    write_plan(backend, Plan(STAMP, SET, ("secrets",), "schedule", WHEN))
    write_marker(backend, STAMP, SET, {"stamp": STAMP, "backup_set_id": SET})
    # When retention keeping only the newest complete set runs, weeks later (past every grace period)
    with caplog.at_level(logging.WARNING):
        plan = apply_retention(backend, STAMP, keep_last=1, now=WHEN.replace(day=28))
    # Then the unverified set is kept (a legacy set still restores with --allow-unsigned), with the reason said,
    # and the genuine one is the newest complete set
    assert plan.delete == [] and legacy in plan.keep and "not verified" in plan.reasons[legacy]
    assert backend.exists(set_prefix(STAMP, legacy) + PLAN) and f"{legacy} does not verify" in caplog.text
    assert plan.reasons[SET] == "newest complete set (always kept)"
