"""The catalog worker's handlers, called directly with events and a LocalStore-backed ArtifactStore."""
from __future__ import annotations

import io
import json
import logging
from datetime import datetime, timedelta, timezone

import pytest

from contracts import (ArtifactStored, ArtifactStoredPayload, BackupDue, BackupDuePayload, BackupSetCompleted,
                       default_registry, new_backup_set_id)
from workers.app import BUILTIN, Deps, builtin_bindings
from workers.artifacts.setmanifest import artifact_key, read_manifest
from workers.artifacts.service import ArtifactStore
from workers.artifacts.sets import COMPLETE, PLAN, Plan, read_marker, read_plan, write_marker, write_plan
from workers.artifacts.settings import RetentionSettings
from workers.catalog.handler import CatalogHandler, completion_event_id
from workers.config import Settings
from workers.runtime.errors import PermanentError, TransientError
from workers.middleware.metrics import Metrics
from workers.runtime.worker import JobContext, WorkerSpec
from workers.storage.local import LocalStore
from workers.storage.settings import StoreSettings

STAMP = "stamp1"


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(LocalStore(tmp_path / "store"), compress=False)


@pytest.fixture
def ctx() -> JobContext:
    return JobContext("catalog", "job-1", 1, logging.LoggerAdapter(logging.getLogger("test.catalog"), {}))


def handler(store: ArtifactStore, **retention) -> CatalogHandler:
    return CatalogHandler(RetentionSettings(**retention), store)


def built_catalog(tmp_path, **settings) -> WorkerSpec:
    """The catalog worker as the composition builds it from the whole ``Settings`` (a local store in tmp_path)."""
    whole = Settings(store=StoreSettings(kind="local", local_path=tmp_path / "store"), **settings)
    return BUILTIN["catalog"](Deps(whole, Metrics()))


def backup_due(set_id: str, *components: str, when: datetime | None = None) -> BackupDue:
    return BackupDue(source="cli", stamp=STAMP, correlation_id=set_id, occurred_at=when or datetime.now(timezone.utc),
                     payload=BackupDuePayload(backup_set_id=set_id, components=components or ("secrets", "databases"),
                                              reason="schedule", requested_by="scheduler"))


def stored(store: ArtifactStore, set_id: str, component: str, name: str) -> ArtifactStored:
    """Store a small artifact the way the upload worker does, and the artifact-stored event it emits."""
    key = artifact_key(STAMP, set_id, component, name)
    a = store.put(key, lambda: io.BytesIO(f"{component}/{name}".encode()))
    return ArtifactStored(source="worker:upload", stamp=STAMP, correlation_id=set_id, payload=ArtifactStoredPayload(
        key=key, store=store.backend.name, component=component, name=name, plaintext_size=a.plaintext_size,
        plaintext_sha256=a.plaintext_sha256, stored_size=a.stored_size, stored_sha256=a.stored_sha256,
        compressed=a.compressed, encrypted=a.encrypted, thumbprint=a.thumbprint, verified_by="stat",
        duration_seconds=0.01))


def test_backup_due_writes_the_plan_once(store, ctx):
    # Given a backup-due for two components
    set_id = new_backup_set_id()
    event = backup_due(set_id, "secrets", "databases")
    # When the catalog handles it, and then a redelivery and a conflicting backup-due for the same set
    assert handler(store).backup_due(event, ctx) == []
    handler(store).backup_due(event, ctx)
    handler(store).backup_due(backup_due(set_id, "fileshare"), ctx)
    # Then plan.json holds the first request: components, reason, when, by whom, which event
    plan = read_plan(store.backend, STAMP, set_id)
    assert plan.components == ("secrets", "databases") and plan.reason == "schedule"
    assert plan.requested_at == event.occurred_at and plan.requested_by == "scheduler"
    assert plan.event_id == str(event.event_id) and plan.expected is None
    with store.backend.open(f"{STAMP}/{set_id}/{PLAN}") as stream:
        raw = json.loads(stream.read())
    assert raw["format"] == 1 and "expected" not in raw


def test_completion_is_detected_exactly_once_when_every_planned_component_has_an_artifact(store, ctx):
    # Given a plan for secrets and databases
    h = handler(store)
    set_id = new_backup_set_id()
    h.backup_due(backup_due(set_id, "secrets", "databases"), ctx)
    # When the secrets artifact lands, the set is not complete yet
    assert h.artifact_stored(stored(store, set_id, "secrets", "SystemSecrets.json"), ctx) == []
    assert read_marker(store.backend, STAMP, set_id) is None
    # And when the first database lands, it is: one backup-set-completed, marker written
    follow_ups = h.artifact_stored(stored(store, set_id, "databases", "appservice_hosting.bak"), ctx)
    assert len(follow_ups) == 1 and isinstance(follow_ups[0], BackupSetCompleted)
    done = follow_ups[0]
    assert done.correlation_id == set_id and done.stamp == STAMP
    assert done.payload.components == ("secrets", "databases") and done.payload.artifacts == 2
    assert done.event_id == completion_event_id(STAMP, set_id)
    assert default_registry().decode(done.to_json()) == done
    marker = read_marker(store.backend, STAMP, set_id)
    assert marker["artifacts"] == 2 and marker["planned"] == ["secrets", "databases"]
    # Then a later database artifact only updates the manifest: no second completion
    assert h.artifact_stored(stored(store, set_id, "databases", "appservice_metering.bak"), ctx) == []
    assert len(read_manifest(store.backend, STAMP, set_id)["artifacts"]) == 3
    assert read_marker(store.backend, STAMP, set_id) == marker


def test_a_redelivered_completing_event_emits_the_same_completion_again(store, ctx):
    # Given a set completed by one artifact-stored event
    h = handler(store)
    set_id = new_backup_set_id()
    h.backup_due(backup_due(set_id, "secrets"), ctx)
    event = stored(store, set_id, "secrets", "SystemSecrets.json")
    first = h.artifact_stored(event, ctx)
    # When that same event is redelivered (the follow-up may not have been confirmed before a crash)
    again = h.artifact_stored(event, ctx)
    # Then the completion is re-emitted with the same event id and payload; a different duplicate emits nothing
    assert len(again) == 1 and again[0].event_id == first[0].event_id and again[0].payload == first[0].payload
    assert h.artifact_stored(stored(store, set_id, "secrets", "SystemSecrets.json"), ctx) == []


def test_an_artifact_of_an_unplanned_set_is_retried_then_refused_after_the_deadline_and_never_completes(store, ctx):
    # Given no backup-due was seen for a young set, and an old one
    young, old = new_backup_set_id(), new_backup_set_id(datetime.now(timezone.utc) - timedelta(hours=7))
    h = handler(store)
    # When their artifacts are stored
    # Then the young set's is retried (its plan may still come), the old one's refused for good (6 h deadline)
    with pytest.raises(TransientError, match="has no plan yet"):
        h.artifact_stored(stored(store, young, "fileshare", "content.tar"), ctx)
    with pytest.raises(PermanentError, match="never planned") as refused:
        h.artifact_stored(stored(store, old, "fileshare", "content.tar"), ctx)
    assert "backup-due" in refused.value.hint
    # And neither got a marker or a manifest
    for set_id in (young, old):
        assert read_marker(store.backend, STAMP, set_id) is None and read_manifest(store.backend, STAMP, set_id) is None
    # And when the young set's plan arrives, the retried event completes it, and retention removes what was put
    # into the old, never planned set (incomplete, past the grace period), telling the operator
    h.backup_due(backup_due(young, "fileshare"), ctx)
    done, warning = h.artifact_stored(stored(store, young, "fileshare", "content.tar"), ctx)
    assert isinstance(done, BackupSetCompleted) and done.correlation_id == young
    assert warning.type == "job-failed" and warning.correlation_id == old
    assert not list(store.backend.list(f"{STAMP}/{old}/"))


def test_expected_counts_in_the_plan_hold_completion_back_until_met(store, ctx):
    # Given a plan expecting two database artifacts (the optional `expected` map)
    set_id = new_backup_set_id()
    write_plan(store.backend, Plan(STAMP, set_id, ("databases",), "schedule", datetime.now(timezone.utc),
                                   expected={"databases": 2}))
    h = handler(store)
    # When the first database lands, the set is still waiting; the second completes it
    assert h.artifact_stored(stored(store, set_id, "databases", "appservice_hosting.bak"), ctx) == []
    assert len(h.artifact_stored(stored(store, set_id, "databases", "appservice_metering.bak"), ctx)) == 1


def old_complete_set(store: ArtifactStore, days_ago: int) -> str:
    when = datetime.now(timezone.utc) - timedelta(days=days_ago)
    set_id = new_backup_set_id(when)
    write_plan(store.backend, Plan(STAMP, set_id, ("secrets",), "schedule", when))
    stored(store, set_id, "secrets", "SystemSecrets.json")
    write_marker(store.backend, STAMP, set_id, {"requested_at": when.isoformat()})
    return set_id


@pytest.mark.parametrize("auto", [True, False])
def test_retention_runs_when_a_set_completes_if_auto(store, ctx, auto, caplog):
    # Given three older complete sets and retention keeping two
    old = [old_complete_set(store, days) for days in (3, 2, 1)]
    h = handler(store, keep_last=2, auto=auto)
    set_id = new_backup_set_id()
    h.backup_due(backup_due(set_id, "secrets"), ctx)
    # When a new set completes
    with caplog.at_level(logging.INFO):
        assert len(h.artifact_stored(stored(store, set_id, "secrets", "SystemSecrets.json"), ctx)) == 1
    # Then with auto retention only the two newest complete sets remain, and the deletions are logged
    left = {info.key.split("/")[1] for info in store.backend.list(f"{STAMP}/")}
    if auto:
        assert left == {set_id, old[2]}
        assert "deleted 2 set(s)" in caplog.text and old[0] in caplog.text and old[1] in caplog.text
    else:
        assert left == {set_id, *old}


def test_backup_set_completed_is_an_audit_log_line(store, ctx, caplog):
    # Given a completion event
    set_id = new_backup_set_id()
    h = handler(store)
    h.backup_due(backup_due(set_id, "secrets"), ctx)
    [done] = h.artifact_stored(stored(store, set_id, "secrets", "SystemSecrets.json"), ctx)
    # When the catalog consumes it
    with caplog.at_level(logging.INFO):
        assert h.backup_set_completed(done, ctx) == []
    # Then it logs one audit line and emits nothing
    assert f"audit: backup set {STAMP}/{set_id} completed" in caplog.text


def test_the_catalog_worker_consumes_what_its_builtin_bindings_route_to_it(tmp_path):
    # Given settings pointing at a local store
    # When the worker is built
    spec = built_catalog(tmp_path)
    # Then it is registered and handles exactly its bound event types
    assert "catalog" in BUILTIN and spec.name == "catalog"
    assert spec.event_types == builtin_bindings(["catalog"])["catalog"]
    assert set(spec.event_types) == {"artifact-stored", "backup-due", "backup-set-completed", "secrets-stored",
                                     "database-backed-up", "fileshare-synced", "job-failed", "artifact-mirrored"}
    assert COMPLETE == "complete.json"


def test_a_backup_due_for_a_component_this_site_does_not_back_up_is_planned_without_it_and_reported(store, ctx,
                                                                                                     tmp_path):
    from workers.catalog.unserved import ERROR_CLASS
    h = CatalogHandler(RetentionSettings(), store, components=("secrets", "databases"))
    set_id = new_backup_set_id()
    # Given a producer that bypassed the CLI's check and asked for all three components
    event = backup_due(set_id, "secrets", "databases", "fileshare")
    # When the catalog plans the set
    out = h.backup_due(event, ctx)
    # Then the plan holds what this site backs up and names the rest, so the set can complete
    plan = read_plan(store.backend, STAMP, set_id)
    assert plan.components == ("secrets", "databases") and plan.unserved == ("fileshare",)
    with store.backend.open(f"{STAMP}/{set_id}/{PLAN}") as fh:
        assert json.loads(fh.read())["unserved"] == ["fileshare"]
    # And the operator gets one warning saying what was left out and how to fix it
    (warning,) = out
    p = warning.payload
    assert (warning.type, p.worker, p.error_class, p.severity, p.will_retry) == \
        ("job-failed", "catalog", ERROR_CLASS, "warning", False)
    assert "fileshare" in p.message and "APPSVC_DR_COMPONENTS=secrets,databases" in p.message
    assert "APPSVC_DR_COMPONENTS" in p.hint and p.failed_event_id == event.event_id
    assert warning.correlation_id == set_id and warning.causation_id == event.event_id
    # And a redelivery re-emits the same warning (same id); another backup-due for the set emits nothing
    assert [e.event_id for e in h.backup_due(event, ctx)] == [warning.event_id]
    assert h.backup_due(backup_due(set_id, "secrets", "fileshare"), ctx) == []
    # And a request for nothing this site serves writes no plan, and says so
    other = new_backup_set_id()
    (only,) = h.backup_due(backup_due(other, "fileshare"), ctx)
    assert read_plan(store.backend, STAMP, other) is None and "no plan written" in only.payload.message
    # And the catalog built from settings knows the site's components
    spec = built_catalog(tmp_path, components="secrets")
    assert spec.target.components == ("secrets",)
