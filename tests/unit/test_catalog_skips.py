"""A database skipped on purpose (not the preferred Always On replica): the catalog records it in the set, keeps
the set waiting for it, and tells the operator once how to fix it."""
from __future__ import annotations

import logging
from uuid import uuid4

from contracts import DatabaseBackedUp, DatabaseBackedUpPayload, JobFailed, default_registry, new_backup_set_id
from workers.artifacts.setmanifest import read_set
from workers.artifacts.sets import read_marker, read_plan, read_skip, read_skips, waiting_for
from workers.artifacts.settings import RetentionSettings
from workers.catalog.handler import CatalogHandler
from workers.catalog.skips import ERROR_CLASS, skip_event_id
from workers.engines.base import SKIPPED_NOT_PREFERRED
from tests.unit.test_catalog_handler import STAMP, backup_due, built_catalog, ctx, store, stored  # noqa: F401 - fixtures

DATABASES = ("appservice_hosting", "appservice_metering")


def catalog(store) -> CatalogHandler:  # noqa: F811 - fixture
    return CatalogHandler(RetentionSettings(), store, databases=len(DATABASES))


def skipped(set_id: str, database: str = "appservice_metering", reason: str | None = SKIPPED_NOT_PREFERRED,
            ) -> DatabaseBackedUp:
    return DatabaseBackedUp(source="worker:db-backup", stamp=STAMP, correlation_id=set_id, causation_id=uuid4(),
                            payload=DatabaseBackedUpPayload(database=database, engine="sqlserver", server="sql2,1433",
                                                            size=0, duration_seconds=0.2, skipped_reason=reason))


def test_a_skip_is_recorded_and_told_once_with_how_to_fix(store, ctx, caplog):  # noqa: F811 - fixtures
    # Given a planned set for both databases
    h, set_id = catalog(store), new_backup_set_id()
    h.backup_due(backup_due(set_id, "databases"), ctx)
    event = skipped(set_id)
    # When db-backup reports appservice_metering skipped on a non-preferred replica
    with caplog.at_level(logging.INFO):
        [warning] = h.database_backed_up(event, ctx)
    # Then a job-failed *warning* names the database, the reason and the fix, for the notifier to deliver
    assert isinstance(warning, JobFailed) and default_registry().decode(warning.to_json()) == warning
    p = warning.payload
    assert (p.severity, p.error_class, p.worker, p.will_retry) == ("warning", ERROR_CLASS, "db-backup", False)
    assert (p.failed_event_type, p.failed_event_id) == ("database-backup-requested", event.causation_id)
    assert "appservice_metering" in p.message and "not the preferred replica" in p.message
    assert "APPSVC_DR_DATABASE__SERVER" in p.hint and "backup preference" in p.hint
    assert f"publish database-backup-requested --stamp {STAMP} --set-id {set_id} -p database=appservice_metering" \
        in p.hint
    assert warning.event_id == skip_event_id(STAMP, set_id, "appservice_metering")
    assert warning.correlation_id == set_id and warning.source == "worker:catalog"
    # And the skip is noted in the set, and the catalog's log says what the set waits for
    note = read_skip(store.backend, STAMP, set_id, "appservice_metering")
    assert note["reason"] == SKIPPED_NOT_PREFERRED and note["server"] == "sql2,1433"
    assert f"backup set {STAMP}/{set_id} waiting: appservice_metering skipped (not the preferred replica)" \
        in caplog.text
    # When the same event is redelivered, Then the same warning (same id) is emitted again
    assert [e.event_id for e in h.database_backed_up(event, ctx)] == [warning.event_id]
    # When the same database is skipped again for the set (a redelivered backup job), Then nobody is told twice
    assert h.database_backed_up(skipped(set_id), ctx) == []


def test_the_set_waits_for_the_skipped_database_and_completes_when_it_is_backed_up(store, ctx, caplog):  # noqa: F811
    # Given a set with appservice_hosting stored and appservice_metering skipped
    h, set_id = catalog(store), new_backup_set_id()
    h.backup_due(backup_due(set_id, "databases"), ctx)
    assert h.artifact_stored(stored(store, set_id, "databases", "appservice_hosting.bak"), ctx) == []
    h.database_backed_up(skipped(set_id), ctx)
    # Then it is not complete and says why, also after more artifacts arrive
    plan, backup_set = read_plan(store.backend, STAMP, set_id), read_set(store, STAMP, set_id)
    assert waiting_for(plan, backup_set, read_skips(store.backend, STAMP, set_id)) == [
        "appservice_metering skipped (not the preferred replica)"]
    with caplog.at_level(logging.INFO):
        assert h.artifact_stored(stored(store, set_id, "databases", "appservice_hosting.bak"), ctx) == []
    assert "waiting: appservice_metering skipped (not the preferred replica)" in caplog.text
    assert read_marker(store.backend, STAMP, set_id) is None
    # When another replica's worker backs the database up into the set
    [done] = h.artifact_stored(stored(store, set_id, "databases", "appservice_metering.bak"), ctx)
    # Then the set completes normally, and a late skip of that database is only logged
    assert done.type == "backup-set-completed" and done.payload.artifacts == 2
    assert h.database_backed_up(skipped(set_id), ctx) == []


def test_a_skip_of_a_database_the_set_already_holds_is_not_notified(store, ctx):  # noqa: F811 - fixtures
    # Given appservice_metering already backed up into the set by the preferred replica
    h, set_id = catalog(store), new_backup_set_id()
    h.backup_due(backup_due(set_id, "databases"), ctx)
    h.artifact_stored(stored(store, set_id, "databases", "appservice_metering.bak"), ctx)
    # When a non-preferred replica reports it skipped, Then nothing is noted or notified
    assert h.database_backed_up(skipped(set_id), ctx) == []
    assert read_skips(store.backend, STAMP, set_id) == {}


def test_other_reasons_get_a_generic_hint_and_backed_up_databases_only_an_audit_line(store, ctx):  # noqa: F811
    # Given a skip for another reason, and an ordinary backup
    h, set_id = catalog(store), new_backup_set_id()
    h.backup_due(backup_due(set_id, "databases"), ctx)
    [warning] = h.database_backed_up(skipped(set_id, "appservice_hosting", "database is OFFLINE"), ctx)
    # Then the hint does not talk about Always On, but still says how to back the database up into the set
    assert "Always On" not in warning.payload.hint and "Fix why db-backup skipped appservice_hosting" in \
        warning.payload.hint and "database-backup-requested" in warning.payload.hint
    assert h.database_backed_up(skipped(set_id, "appservice_hosting", None), ctx) == []


def test_the_catalog_worker_routes_database_backed_up_to_the_skip_handling(tmp_path):
    spec = built_catalog(tmp_path)
    assert spec.handlers[DatabaseBackedUp].__name__ == "database_backed_up"
