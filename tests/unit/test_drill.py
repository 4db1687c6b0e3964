"""Restore drill pieces without servers: set selection, the report and marker, the secrets check, and the SQL
Server database drill against the simulated SQL Server."""
from __future__ import annotations

import hashlib
import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from contracts import new_backup_set_id
from tests.unit.certs import make_cert, signed
from tests.sqlsim import PASSWORD, Simulator, app_service_server
from workers.artifacts.setmanifest import artifact_key
from workers.artifacts.service import ArtifactStore
from workers.artifacts.sets import Plan, write_marker as write_complete, write_plan
from workers.config import load_settings
from workers.engines import DatabaseSettings, SqlServerEngine
from workers.drill import checks
from workers.drill.checks import Drill, scratch_name
from workers.drill.results import (ESTIMATED_RTO, METRIC, ComponentResult, DrillResult, estimated_rto, last_by_result,
                                   read_markers, report_lines, table, write_marker, write_textfile)
from workers.drill.run import candidates, choose, components_of
from workers.runtime.errors import ConfigurationError, PermanentError
from workers.secrets.handler import REFERENCE_NAME
from workers.secrets.versions import version_id, version_key
from workers.storage.codec import KeyRing, load_certificate
from workers.storage.local import LocalStore

STAMP, CANARY = "stamp1", "CANARY-unit-drill"
NOW = datetime(2026, 11, 22, 12, tzinfo=timezone.utc)


def make_set(backend, hours_ago: float, *, complete: bool, components=("secrets", "databases")) -> str:
    when = NOW - timedelta(hours=hours_ago)
    set_id = new_backup_set_id(when)
    write_plan(backend, Plan(STAMP, set_id, components, "schedule", when))
    if complete:
        write_complete(backend, STAMP, set_id, {"requested_at": when.isoformat()})
    return set_id


# ------------------------------------------------------------------------------------------- set selection
def test_the_newest_complete_set_is_chosen_not_a_newer_incomplete_one(tmp_path):
    # Given an old complete set, a newer complete set and a still newer incomplete one
    backend = LocalStore(tmp_path)
    old, new = make_set(backend, 48, complete=True), make_set(backend, 24, complete=True)
    running = make_set(backend, 1, complete=False)
    found = candidates(backend, STAMP)
    # When no set is named / Then the newest complete one is drilled
    assert [c.set_id for c in found] == [old, new, running]
    assert choose(found, STAMP).set_id == new
    # And a named set is drilled even when incomplete; an unknown one is an error with a hint
    assert choose(found, STAMP, running).complete is False
    with pytest.raises(PermanentError, match="no backup set 20990101") as caught:
        choose(found, STAMP, "20990101T000000Z-00000000")
    assert "artifacts list" in caught.value.hint


def test_no_complete_set_is_an_error_and_components_follow_the_plan(tmp_path):
    backend = LocalStore(tmp_path)
    make_set(backend, 1, complete=False)
    with pytest.raises(PermanentError, match="no complete backup set") as caught:
        choose(candidates(backend, STAMP), STAMP)
    assert "--set" in caught.value.hint
    only = candidates(backend, STAMP)[0]
    assert components_of(only, {"secrets"}, None) == ["secrets", "databases"]          # planned, in order
    assert components_of(only, set(), ["fileshare", "secrets"]) == ["secrets", "fileshare"]
    with pytest.raises(ConfigurationError, match="unknown component"):
        components_of(only, set(), ["tapes"])


# ------------------------------------------------------------------------------------------ report, marker
def drill_result(set_id: str, result: str, minutes: int) -> DrillResult:
    started = NOW + timedelta(minutes=minutes)
    r = DrillResult(STAMP, set_id, f"{minutes:08x}", started, finished_at=started + timedelta(seconds=5))
    r.components = [ComponentResult("secrets", "SystemSecrets.json v1", bytes=10, detail="decrypted"),
                    ComponentResult("databases", "hosting → drill_hosting_x", result=result, bytes=2048,
                                    error="segment 0 failed authentication", hint="restore another set")]
    return r


def test_table_says_what_failed_and_how_to_fix_it():
    lines = table(drill_result("set-a", "failed", 0))
    text = "\n".join(lines)
    assert "FAILED  databases hosting → drill_hosting_x: segment 0 failed authentication" in text
    assert "how to fix: restore another set" in text and "drill FAILED: 1 of 2" in text
    assert any(line.startswith("secrets ") and " passed " in line for line in lines)


def test_markers_round_trip_and_give_the_metric_per_stamp_and_result(tmp_path):
    # Given a passed drill and a later failed one stored next to a set
    backend = LocalStore(tmp_path / "store")
    set_id = make_set(backend, 1, complete=True)
    passed, failed = drill_result(set_id, "passed", 0), drill_result(set_id, "failed", 60)
    keys = [write_marker(backend, passed), write_marker(backend, failed)]
    assert all(k.startswith(f"{STAMP}/{set_id}/drills/") for k in keys)
    # When they are read back / Then oldest first, and the newest time per result
    markers = read_markers(backend, STAMP)
    assert [m["result"] for m in markers] == ["passed", "failed"]
    latest = last_by_result(markers)
    assert latest == {(STAMP, "passed"): passed.finished_at.timestamp(),
                      (STAMP, "failed"): failed.finished_at.timestamp()}
    # And the textfile holds one sample per result, and the report names the last pass
    prom = tmp_path / "drill.prom"
    write_textfile(str(prom), latest)
    samples = [line for line in prom.read_text().splitlines() if line.startswith(METRIC)]
    assert len(samples) == 2 and f'{METRIC}{{result="failed",stamp="{STAMP}"}}' in samples[0]
    assert "last successful restore drill of stamp1: 2026-11-22 12:00:05 UTC" in "\n".join(report_lines(markers, STAMP))
    assert "no restore drill has run" in report_lines([], STAMP)[0]
    # And with the estimate of the newest drill: its components' measured seconds added up, one sample per stamp
    write_textfile(str(prom), latest, {STAMP: estimated_rto(markers)})
    assert f'{ESTIMATED_RTO}{{stamp="{STAMP}"}} {sum(c.seconds for c in failed.components)}' in prom.read_text()
    assert estimated_rto([]) is None
    # And the marker is not taken for an artifact: the set's component list is unchanged
    assert candidates(backend, STAMP)[0].planned == ("secrets", "databases")


# ----------------------------------------------------------------------------------------------- secrets
@pytest.fixture
def secrets_drill(tmp_path):
    cert = make_cert("drill-unit")
    cert.write(tmp_path)
    store = ArtifactStore(signed(LocalStore(tmp_path / "store"), tmp_path),
                          certificate=load_certificate(tmp_path / "cert.pem"))
    keys = KeyRing()
    keys.add_pem(tmp_path / "key.pem")
    settings = load_settings(store={"kind": "local", "local_path": str(tmp_path / "store")})

    def with_secrets(body: bytes) -> Drill:
        set_id = make_set(store.backend, 1, complete=True, components=("secrets",))
        vid = version_id(datetime(2026, 11, 22, 1, 0, tzinfo=timezone.utc), hashlib.sha256(body).hexdigest())
        key = version_key(STAMP, vid)
        stored = store.put(key, lambda: io.BytesIO(body))
        ref = {"stamp": STAMP, "version_id": vid, "key": key, "fingerprint": stored.plaintext_sha256}
        store.put(artifact_key(STAMP, set_id, "secrets", REFERENCE_NAME), lambda: io.BytesIO(json.dumps(ref).encode()))
        return Drill(settings, store, keys, STAMP, set_id, "0a1b2c3d", tmp_path)
    return with_secrets


def test_secrets_drill_proves_the_json_parses_without_showing_it(secrets_drill):
    [good] = checks.secrets(secrets_drill(json.dumps({"SqlServerPassword": CANARY, "x": 1}).encode()))
    assert good.passed and "a JSON object with 2 keys" in good.detail
    assert CANARY not in json.dumps(good.__dict__)


def test_secrets_that_do_not_parse_fail_with_a_hint_and_no_content(secrets_drill):
    [bad] = checks.secrets(secrets_drill(b'{"SqlServerPassword": "' + CANARY.encode() + b'" oops'))
    assert bad.result == "failed" and "not a non-empty JSON object" in bad.error
    assert "export the secrets again" in bad.hint and CANARY not in bad.error + bad.hint


# ------------------------------------------------------------------------------------ SQL Server (simulated)
def sql_drill(tmp_path: Path, corrupt_pages: tuple[int, ...] = (), **db) -> tuple[Drill, Simulator]:
    """A set whose database artifact is a real backup taken on the simulated instance (of a database with
    ``corrupt_pages``, which DBCC CHECKDB reports)."""
    settings = load_settings(store={"kind": "local", "local_path": str(tmp_path / "store")},
                             staging={"database_dir": str(tmp_path / "staging")},
                             database={"engine": "sqlserver", "server": "sql01", "username": "backup",
                                       "password": PASSWORD, **db})
    store = ArtifactStore(settings_backend := LocalStore(tmp_path / "store"))
    set_id = make_set(settings_backend, 1, complete=True, components=("databases",))
    sim = Simulator(app_service_server(tmp_path / "sql01"))
    engine = SqlServerEngine(DatabaseSettings(server="sql01", username="backup", password=PASSWORD, **db),
                             connect=sim.connect)
    sim.server.databases["appservice_hosting"].corrupt_pages = list(corrupt_pages)
    taken = tmp_path / "taken.bak"
    engine.backup("appservice_hosting", str(taken))
    store.put(artifact_key(STAMP, set_id, "databases", "appservice_hosting.bak"), lambda: taken.open("rb"))
    return Drill(settings, store, None, STAMP, set_id, "0a1b2c3d", tmp_path, engine=engine), sim


def test_sql_server_drill_restores_with_move_to_scratch_files_and_drops_the_scratch_database(tmp_path):
    # Given a set with a SQL Server backup and a directory for scratch files
    target = scratch_name("appservice_hosting", "0a1b2c3d")
    drill, sim = sql_drill(tmp_path, restore_data_path=r"D:\Drill")
    # When the databases are drilled
    [result] = checks.databases(drill)
    # Then the restore went to scratch names only, was checked ONLINE, and the scratch database was dropped
    assert result.passed, result.error
    assert target == "drill_appservice_hosting_0a1b2c3d"
    assert "ONLINE; DBCC CHECKDB: no allocation or consistency errors; scratch database dropped" in result.detail
    assert sim.statements("DBCC CHECKDB") == [f"DBCC CHECKDB ([{target}]) WITH NO_INFOMSGS, ALL_ERRORMSGS"]
    [restore] = sim.statements("RESTORE DATABASE")
    assert rf"MOVE N'appservice_hosting' TO N'D:\Drill\{target}_appservice_hosting.mdf'" in restore
    assert set(sim.server.databases) == {"appservice_hosting", "appservice_metering"}
    assert sim.server.databases["appservice_hosting"].damaged_by_restore is None
    sim.assert_closed()
    assert not list((tmp_path / "staging").iterdir())              # the staged copy is gone


def test_sql_server_drill_without_a_data_path_restores_into_the_instance_default_directories(tmp_path):
    # Given no directory for scratch files
    drill, sim = sql_drill(tmp_path)
    # When the databases are drilled
    [result] = checks.databases(drill)
    # Then it really restored (like Test-DbaLastBackup), into SERVERPROPERTY('InstanceDefaultDataPath'), checked
    # the copy with DBCC CHECKDB and dropped it
    assert result.passed, result.error
    [restore] = sim.statements("RESTORE DATABASE")
    assert r"TO N'C:\SQL\DATA\drill_appservice_hosting_0a1b2c3d_appservice_hosting.mdf'" in restore
    assert len(sim.statements("DBCC CHECKDB")) == 1
    assert set(sim.server.databases) == {"appservice_hosting", "appservice_metering"}


def test_a_verify_only_drill_is_reported_as_verified_never_passed(tmp_path):
    # Given a drill asked to verify only
    drill, sim = sql_drill(tmp_path)
    drill.verify_only = True
    # When the databases are drilled
    [result] = checks.databases(drill)
    # Then VERIFYONLY and FILELISTONLY ran, nothing was restored, and the result is "verified"
    assert result.result == "verified" and not result.passed and "(verify only)" in result.what
    assert "NOT restored" in result.detail and sim.statements("RESTORE DATABASE") == []
    assert len(sim.statements("RESTORE VERIFYONLY")) == 2       # the backup's own verify, then the drill's
    # And the drill as a whole, its marker and its metric say "verified", the table says it is not a pass
    whole = DrillResult(STAMP, drill.set_id, "0a1b2c3d", NOW, finished_at=NOW, components=[result])
    assert whole.result == "verified" and whole.ok and not whole.passed
    assert whole.to_json()["result"] == "verified"
    assert last_by_result([whole.to_json()]) == {(STAMP, "verified"): NOW.timestamp()}
    assert "drill VERIFIED" in "\n".join(table(whole)) and "not a passed drill" in "\n".join(table(whole))


def test_a_set_without_database_artifacts_fails_the_database_drill(tmp_path):
    drill, _ = sql_drill(tmp_path)
    drill.set_id = make_set(drill.store.backend, 0.5, complete=True)
    [result] = checks.databases(drill)
    assert result.result == "failed" and "no database artifact" in result.error and "dlq show" in result.hint
