"""The backup-set lifecycle read from a LocalStore: states, deadlines, expiry and failure written once, the
recovery-point gauges, and the deadline settings."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client import CollectorRegistry

from contracts import JobFailed, JobFailedPayload, new_backup_set_id
from tests.unit.test_catalog_handler import STAMP, ctx, handler, store, stored  # noqa: F401 - fixtures
from workers.artifacts.lifecycle import stamp_sets
from workers.artifacts.service import ArtifactStore
from workers.artifacts.sets import Plan, write_plan
from workers.artifacts.settings import RetentionSettings
from workers.catalog.lifecycle import Lifecycle, remember_stamp, stored_stamps
from workers.catalog.rpo import SetMetrics
from workers.config import load_settings
from workers.runtime.errors import ConfigurationError

NOW = datetime.now(timezone.utc)


def plan(store: ArtifactStore, hours_ago: float, *components: str) -> str:
    when = NOW - timedelta(hours=hours_ago)
    set_id = new_backup_set_id(when)
    write_plan(store.backend, Plan(STAMP, set_id, components or ("secrets", "fileshare"), "schedule", when))
    return set_id


def states(store: ArtifactStore, retention: RetentionSettings) -> dict[str, str]:
    return {s.set_id: s.state for s in stamp_sets(store.backend, STAMP, retention.deadline_for)}


def failure(set_id: str, *, worker: str = "db-backup", severity: str = "error", will_retry: bool = False) -> JobFailed:
    return JobFailed(source=f"worker:{worker}", stamp=STAMP, correlation_id=set_id, payload=JobFailedPayload(
        worker=worker, failed_event_id=None, failed_event_type="database-backup-requested", error_class="LoginFailed",
        message="login failed for user backup", attempts=1, will_retry=will_retry, hint="grant the login access.",
        severity=severity, dead_letter_queue=f"appsvc-dr.{worker}.dlq"))


def test_each_state_is_read_from_the_store(store, ctx):
    # Given a planned set, one with an artifact, a complete one, and one past its 6 h deadline
    r = RetentionSettings()
    planned, running, done, late = plan(store, 1), plan(store, 1), plan(store, 2, "secrets"), plan(store, 7)
    h = handler(store, auto=False)      # no retention here: it would delete the late, incomplete set
    h.artifact_stored(stored(store, running, "secrets", "s.json"), ctx)
    h.artifact_stored(stored(store, done, "secrets", "s.json"), ctx)
    # When the lifecycle checks the deadlines
    events = Lifecycle(r, store, stamps=(STAMP,)).check(NOW)
    # Then each set has its state, and only the late one expired, with one notification
    assert states(store, r) == {planned: "planned", running: "in-progress", done: "complete", late: "expired"}
    [event] = events
    assert event.correlation_id == late and event.payload.error_class == "BackupSetExpired"
    assert "secrets ×1; fileshare ×1" in event.payload.message and "likely down" in event.payload.message


def test_an_expiry_is_written_once_and_told_once_across_replicas(store):
    # Given a set past its deadline and two catalog replicas
    set_id = plan(store, 7)
    r = RetentionSettings()
    first, second = Lifecycle(r, store, stamps=(STAMP,)), Lifecycle(r, store, stamps=(STAMP,))
    # When both check it, twice
    told = first.check(NOW) + second.check(NOW) + first.check(NOW) + second.check(NOW)
    # Then it was told once
    assert [e.correlation_id for e in told] == [set_id]


def test_component_deadlines_decide_the_sets_deadline(store):
    # Given a fileshare deadline of 12 h and a set planned 7 h ago with fileshare, one with databases only
    r = RetentionSettings(component_deadlines={"fileshare": "12h", "databases": "2h"})
    with_share, databases = plan(store, 7, "secrets", "fileshare"), plan(store, 7, "databases")
    # When the deadlines are checked
    Lifecycle(r, store, stamps=(STAMP,)).check(NOW)
    # Then only the databases set expired (its deadline: 2 h; the other's is the longest of its components, 12 h)
    assert states(store, r) == {with_share: "planned", databases: "expired"}


def test_a_final_error_of_another_worker_fails_its_set_once(store):
    set_id = plan(store, 1, "databases")
    life = Lifecycle(RetentionSettings(), store, stamps=(STAMP,))
    # Given failures the set must not fail on: warnings, retried jobs, the catalog's own notices, the mirror's
    # dead letters (a copy to a mirror target failed; the set on the primary is whole), unplanned sets
    assert life.job_failed(failure(set_id, severity="warning")) == []
    assert life.job_failed(failure(set_id, will_retry=True)) == []
    assert life.job_failed(failure(set_id, worker="catalog")) == []
    assert life.job_failed(failure(set_id, worker="mirror")) == []
    assert life.job_failed(failure(new_backup_set_id())) == []
    assert states(store, RetentionSettings())[set_id] == "planned"
    # When db-backup dead-letters a job of the set, and the notice is redelivered
    [told] = life.job_failed(failure(set_id))
    again = life.job_failed(failure(set_id))
    # Then the set failed once, naming the component, the error and the fix
    assert again == [] and states(store, RetentionSettings())[set_id] == "failed"
    p = told.payload
    assert p.error_class == "BackupSetFailed" and p.severity == "error" and told.correlation_id == set_id
    assert "databases is missing" in p.message and "LoginFailed: login failed" in p.message
    assert "grant the login access." in p.hint and "appsvc-dr dlq replay db-backup" in p.hint


def test_the_recovery_point_gauges_follow_the_store(store, ctx):
    registry = CollectorRegistry()
    life = Lifecycle(RetentionSettings(), store, stamps=(STAMP,))
    life.observers.append(SetMetrics(registry, 3600.0))
    # Given an old complete set, a newer expired one and an open one
    done, expired, open_ = plan(store, 30, "secrets"), plan(store, 8), plan(store, 1)
    handler(store, auto=False).artifact_stored(stored(store, done, "secrets", "s.json"), ctx)
    # When the lifecycle checks the stamp
    life.check(NOW)
    value = lambda name, **labels: registry.get_sample_value(name, {"stamp": STAMP, **labels})  # noqa: E731
    # Then the gauges say so
    assert value("appsvc_dr_newest_complete_set_timestamp_seconds") == pytest.approx((NOW - timedelta(hours=30)).timestamp(), abs=1)
    assert value("appsvc_dr_backup_sets", state="complete") == 1 and value("appsvc_dr_backup_sets", state="expired") == 1
    assert value("appsvc_dr_backup_sets", state="planned") == 1 and value("appsvc_dr_backup_sets", state="failed") == 0
    assert value("appsvc_dr_backup_sets_unresolved", state="expired") == 1
    assert value("appsvc_dr_rpo_objective_seconds") == 3600.0
    assert value("appsvc_dr_set_deadline_timestamp_seconds") == pytest.approx((NOW + timedelta(hours=5)).timestamp(), abs=1)
    assert expired and open_


def test_component_deadlines_read_from_the_environment(monkeypatch):
    # Given the per-component deadlines as a list, then as JSON
    monkeypatch.setenv("APPSVC_DR_RETENTION__COMPONENT_DEADLINES", "fileshare=12h, databases=30m")
    listed = load_settings().retention
    monkeypatch.setenv("APPSVC_DR_RETENTION__COMPONENT_DEADLINES", '{"fileshare": "P1D"}')
    as_json = load_settings().retention
    # Then both are read, and a set's deadline is the longest of its components'
    assert listed.deadline_for(["secrets", "fileshare"]) == timedelta(hours=12)
    assert listed.deadline_for(["databases"]) == timedelta(minutes=30)
    assert listed.deadline_for([]) == listed.set_deadline == timedelta(hours=6)
    assert as_json.component_deadlines == {"fileshare": timedelta(days=1)}
    # And a zero deadline is refused at start
    monkeypatch.setenv("APPSVC_DR_RETENTION__COMPONENT_DEADLINES", "fileshare=0s")
    with pytest.raises(ConfigurationError, match="component_deadlines of fileshare must be longer"):
        load_settings()


def test_sets_long_past_their_deadline_expire_without_a_notification_each(store, caplog):
    # Given a store from before set deadlines were checked: a set 10 days old, and one 7 hours old
    ancient, recent = plan(store, 240), plan(store, 7)
    # When the catalog checks the deadlines
    told = Lifecycle(RetentionSettings(), store, stamps=(STAMP,)).check(NOW)
    # Then both expired, only the recent one is told, and the old one is named in one log line
    assert states(store, RetentionSettings()) == {ancient: "expired", recent: "expired"}
    assert [e.correlation_id for e in told] == [recent]
    assert f"marked expired without a notification each: {ancient}" in caplog.text


def test_the_set_deadline_has_one_name(monkeypatch):
    # Given the catalog-section name an operator might guess for the set deadline
    monkeypatch.setenv("APPSVC_DR_CATALOG__SET_DEADLINE", "1h")
    # When the settings are loaded
    # Then they are refused, naming the setting to use (an unknown variable would otherwise be ignored silently)
    with pytest.raises(ConfigurationError, match="APPSVC_DR_CATALOG__SET_DEADLINE is not a setting") as caught:
        load_settings()
    assert "APPSVC_DR_RETENTION__SET_DEADLINE" in caught.value.hint


def test_the_stamp_index_ignores_names_that_are_no_stamp(store, caplog):
    # Given the catalog's stamp index with two genuine stamps and entries something else wrote
    for name in ("stamp1", "stamp-2", "-dash", "a" * 130, "sub/dir"):
        remember_stamp(store.backend, name)
    # When the stamps are read
    # Then only the genuine ones are taken, the others named in a warning
    assert stored_stamps(store.backend) == {"stamp1", "stamp-2"}
    assert "no stamp name" in caplog.text
