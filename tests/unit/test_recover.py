"""`recover`'s decisions on a real local store: which set (a drilled one first, and why), the estimates from the
drill's measured throughput, the signed state file, and the file-share pre-flight on local directories."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from tests.unit.certs import signed
from tests.unit.forge import STAMP, plan_set
from workers.artifacts.sets import write_marker
from workers.drill.results import ComponentResult, DrillResult, read_markers, write_marker as write_drill
from workers.recover.choose import choose_set, estimated_rto, throughput
from workers.recover.contents import Contents
from workers.recover.model import Targets
from workers.recover.preflight import check
from workers.recover.state import DONE, Recovery, StateRefused, StepState, load, new_id, now, save, state_key
from workers.repository.manifest import Entry, Manifest
from workers.runtime.errors import PermanentError
from workers.storage.local import LocalStore

OLD, NEW = "20261101T020000Z-aaaaaaaa", "20261102T020000Z-bbbbbbbb"


@pytest.fixture
def backend(tmp_path):
    store = signed(LocalStore(tmp_path / "store"), tmp_path)
    for set_id in (OLD, NEW):
        plan_set(store, set_id, "secrets", "databases", "fileshare")
        write_marker(store, STAMP, set_id, {"stamp": STAMP, "backup_set_id": set_id})
    return store


def drill(backend, set_id: str, passed: bool, when: datetime) -> None:
    result = DrillResult(STAMP, set_id, f"d{set_id[-4:]}", when, finished_at=when + timedelta(minutes=5))
    result.components = [ComponentResult("databases", "db", bytes=100 * 2 ** 20, seconds=10.0),
                         ComponentResult("fileshare", "snapshot", bytes=50 * 2 ** 20, seconds=5.0,
                                         result="passed" if passed else "failed")]
    write_drill(backend, result)


def test_the_newest_drilled_set_is_chosen_over_a_newer_undrilled_one_and_the_plan_says_why(backend):
    drill(backend, OLD, True, datetime(2026, 11, 1, 3, tzinfo=timezone.utc))
    markers = read_markers(backend, STAMP)
    choice = choose_set(backend, STAMP, markers)
    assert choice.state.set_id == OLD and choice.drilled
    assert f"the newer {NEW} was never drilled successfully: pass --latest" in choice.reason
    assert choose_set(backend, STAMP, markers, latest=True).state.set_id == NEW


def test_without_a_passed_drill_the_newest_complete_set_is_taken_and_flagged(backend):
    drill(backend, NEW, False, datetime(2026, 11, 2, 3, tzinfo=timezone.utc))
    choice = choose_set(backend, STAMP, read_markers(backend, STAMP))
    assert choice.state.set_id == NEW and not choice.drilled and "NO restore drill of any set passed" in choice.reason


def test_throughput_comes_from_the_newest_passed_drill_and_the_rto_from_the_newest_drill(backend):
    drill(backend, OLD, True, datetime(2026, 11, 1, 3, tzinfo=timezone.utc))
    drill(backend, NEW, False, datetime(2026, 11, 2, 3, tzinfo=timezone.utc))
    markers = read_markers(backend, STAMP)
    assert throughput(markers) == {"databases": 10 * 2 ** 20, "fileshare": 10 * 2 ** 20}
    assert estimated_rto(markers) == 15.0 and estimated_rto([]) is None


def test_the_state_is_signed_and_an_altered_one_is_refused(backend, tmp_path):
    recovery = Recovery(new_id(), STAMP, OLD, now(), Targets(fileshare="/x").to_json(),
                        [StepState("database:a", "database", status=DONE, runs=1, proof={"rows": 3})])
    key = save(backend, recovery)
    assert key == state_key(STAMP, recovery.recovery_id)
    assert load(backend, STAMP, recovery.recovery_id).step("database:a").proof == {"rows": 3}
    path = tmp_path / "store" / key
    data = json.loads(path.read_text())
    data["steps"][0]["status"] = "pending"
    path.write_text(json.dumps(data))
    with pytest.raises(PermanentError, match="damaged, unsigned or forged"):
        load(backend, STAMP, recovery.recovery_id)


@pytest.mark.parametrize("field, targets, step, named", [
    ("port as text", {"fileshare_port": "445"}, {}, "'fileshare_port' is str"),
    ("port out of range", {"fileshare_port": 70000}, {}, "'fileshare_port' is 70000"),
    ("skip not names", {"skip": [1]}, {}, "'skip' must list component names"),
    ("flag as text", {"hosting_vss": "yes"}, {}, "'hosting_vss' is str"),
    ("runs as bool", {}, {"runs": True}, "'runs' is bool"),
    ("unknown status", {}, {"status": "skipped"}, "has status 'skipped'"),
    ("proof not an object", {}, {"proof": [1]}, "'proof' is list"),
])
def test_a_signed_state_with_a_field_of_the_wrong_type_is_refused_naming_it(backend, field, targets, step, named):
    # Given a state that verifies but holds what `recover run` never writes (a signing key misused, or a bug)
    recovery = Recovery(new_id(), STAMP, OLD, now(), {**Targets(fileshare="/x").to_json(), **targets},
                        [StepState("database:a", "database", status=DONE, runs=1)])
    for name, value in step.items():
        setattr(recovery.steps[0], name, value)
    save(backend, recovery)
    # When it is read to resume: refused at once, the field named, with the way out
    with pytest.raises(StateRefused) as refused:
        load(backend, STAMP, recovery.recovery_id)
    assert named in refused.value.message and "without --resume" in refused.value.hint


FORGED_TARGETS = {"database_server": "evil.example", "fileshare": r"\\evil.example\share",
                  "secrets_out": "/tmp/SystemSecrets.json"}


@pytest.mark.parametrize("trust", ["no verify key", "unsigned allowed", "signer unknown"])
def test_an_unsigned_state_is_refused_even_where_unsigned_objects_are_read(tmp_path, trust):
    # Given a state file written by someone with write access to the store only: no signature (or another key's),
    # aiming the recovery's database restore, share and secrets elsewhere
    store = LocalStore(tmp_path / "store")
    if trust == "unsigned allowed":                         # --allow-unsigned, given for a legacy set
        store = signed(store, tmp_path, signer=None, allow_unsigned=True)
    writer = signed(LocalStore(tmp_path / "store"), tmp_path, signer="intruder", verify=("intruder",)) \
        if trust == "signer unknown" else LocalStore(tmp_path / "store")
    if trust == "signer unknown":
        store = signed(store, tmp_path, signer=None, allow_unsigned=True)
    recovery = Recovery("20261203T010000Z-abcdef", STAMP, OLD, now(), FORGED_TARGETS,
                        [StepState("secrets", "secrets", status=DONE, runs=1)])
    save(writer, recovery)
    # When `recover run --resume` (or status) reads it: refused, before any of its targets is used
    with pytest.raises(PermanentError, match="damaged, unsigned or forged") as caught:
        load(store, STAMP, recovery.recovery_id)
    assert "signing key" in caught.value.hint


def contents_of(size: int) -> Contents:
    manifest = Manifest("snap", STAMP, OLD, "src", entries=[Entry("a.bin", False, size, 0, 0)])
    return Contents(STAMP, OLD, snapshot="snap", manifest=manifest)


def test_file_share_pre_flight_on_local_targets(tmp_path):
    settings = None                                     # only the file share and outputs are checked here
    skip = ("databases", "secrets")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "old.txt").write_text("x")
    # A non-empty target needs --force
    found = check(settings, Targets(fileshare=str(busy), out_dir=tmp_path, skip=skip), contents_of(10))
    assert [p.what for p in found.problems] == [f"file-share target {busy} is not empty (1 entries, e.g. 'old.txt')"]
    assert "Pass --force" in found.problems[0].fix
    assert not check(settings, Targets(fileshare=str(busy), out_dir=tmp_path, skip=skip), contents_of(10),
                     force=True).problems
    # A missing target is probed in its nearest existing parent (and created on restore); nothing is left there
    fresh = tmp_path / "new" / "share"
    found = check(settings, Targets(fileshare=str(fresh), out_dir=tmp_path, skip=skip), contents_of(10))
    assert not found.problems and "(created on restore)" in found.notes[0] and not fresh.parent.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]
    # More than the volume holds is refused with the sizes; no target at all is named
    found = check(settings, Targets(fileshare=str(fresh), out_dir=tmp_path, skip=skip), contents_of(2 ** 60))
    assert "free, the snapshot needs" in found.problems[0].what
    found = check(settings, Targets(out_dir=tmp_path, skip=skip), contents_of(1))
    assert found.problems[0].what == "no file-share target given"


def test_a_sql_server_target_is_checked_through_the_engine_and_a_refused_login_is_named(tmp_path):
    from tests.sqlsim import app_service_server
    from tests.unit.sqlserver_sim import DB, make
    from workers.recover.contents import DatabaseArtifact

    def instance(root):
        server = app_service_server(root)
        server.add_database("master")                   # every real instance has it; the model adds it here
        return server

    contents = Contents(STAMP, OLD, databases=[DatabaseArtifact(DB, f"{STAMP}/{OLD}/databases/{DB}.bak",
                                                                "sqlserver", 1024)])
    targets = Targets(out_dir=tmp_path, skip=("fileshare", "secrets"))
    # Given the simulated instance (the target exists, with tables) and the right login: only --force is missing
    engine, _ = make(tmp_path, server=instance(tmp_path / "a"))
    found = check(None, targets, contents, engine=engine)
    assert [p.what for p in found.problems] == [f"database '{DB}' on sql01,1433 exists and holds 2 table(s): a "
                                                "restore would replace it"]
    # And with --force nothing is left to fix, and the check is said
    found = check(None, targets, contents, engine=engine, force=True)
    assert not found.problems and found.notes == [f"database '{DB}' on sql01,1433: replaced (--force); permissions ok"]
    # When the login is refused: the server is named, with how to fix it
    engine, _ = make(tmp_path, server=instance(tmp_path / "b"), password="wrong")
    found = check(None, targets, contents, engine=engine)
    assert len(found.problems) == 1 and "sql01" in found.problems[0].what and found.problems[0].fix
    # And a backup of another engine is refused before any connection
    postgres = Contents(STAMP, OLD, databases=[DatabaseArtifact(DB, "k", "postgres", 1)])
    found = check(None, targets, postgres, engine=engine)
    assert "backups of another engine than the configured sqlserver" in found.problems[0].what
