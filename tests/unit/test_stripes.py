"""Striped database backups in a set: names, per-database completeness in the catalog, restore's stripe list."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from contracts import new_backup_set_id
from tests.unit.test_catalog_handler import STAMP, ctx, handler, stored, store  # noqa: F401 - fixtures
from workers.artifacts.sets import Plan, read_marker, read_skips, waiting_for, write_plan
from workers.artifacts.setscan import scan_sets
from workers.artifacts.setmanifest import read_set
from workers.artifacts.stripes import database_count, database_of, parse, stripe_keys, stripe_name
from workers.dbbackup.restore import backup_keys
from workers.runtime.errors import PermanentError

HOSTING = [f"appservice_hosting.bak.{i}of3" for i in (1, 2, 3)]


def test_names_say_which_stripe_of_how_many_and_which_database():
    assert stripe_name("x.bak", 2, 3) == "x.bak.2of3" and stripe_name("x.bak", 1, 1) == "x.bak"
    assert parse("x.bak.2of3") == ("x.bak", 2, 3) and parse("x.bak") == ("x.bak", 1, 1)
    assert parse("x.bak.4of3") == ("x.bak.4of3", 1, 1)          # not a stripe name: taken as it is
    assert database_of("appservice_hosting.bak.3of3") == database_of("appservice_hosting.dump") == "appservice_hosting"


def test_a_striped_database_counts_once_and_only_when_every_stripe_is_there():
    assert database_count(HOSTING[:2]) == 0
    assert database_count(HOSTING) == 1
    assert database_count(HOSTING + ["appservice_metering.bak"]) == 2
    assert database_count(["appservice_hosting.bak.1of2", "appservice_hosting.bak.3of3"]) == 0


def test_stripe_keys_come_from_the_stored_names_in_order_or_refuse_an_incomplete_backup():
    base = "s/set/databases/appservice_hosting.bak"
    keys = [f"s/set/databases/{n}" for n in reversed(HOSTING)] + ["s/set/databases/appservice_metering.bak"]
    assert stripe_keys(keys, base) == [f"s/set/databases/{n}" for n in HOSTING]
    assert stripe_keys(["s/set/databases/appservice_metering.bak"], "s/set/databases/appservice_metering.bak") == \
        ["s/set/databases/appservice_metering.bak"]
    with pytest.raises(PermanentError, match="incomplete") as caught:
        stripe_keys(keys[1:], base)
    assert "Every stripe" in caught.value.hint
    with pytest.raises(PermanentError, match="no artifact"):
        stripe_keys(keys, "s/set/databases/other.bak")


def test_the_catalog_completes_a_set_of_two_databases_only_when_all_stripes_of_both_are_stored(store, ctx):  # noqa: F811
    # Given a plan expecting two databases, hosting striped in three, metering unstriped
    set_id = new_backup_set_id()
    write_plan(store.backend, Plan(STAMP, set_id, ("databases",), "schedule", datetime.now(timezone.utc),
                                   expected={"databases": 2}))
    h = handler(store)
    # When metering and two of hosting's stripes are stored, the set waits for one database
    for name in ["appservice_metering.bak", *HOSTING[:2]]:
        assert h.artifact_stored(stored(store, set_id, "databases", name), ctx) == []
    backup_set = read_set(store, STAMP, set_id)
    plan = Plan(STAMP, set_id, ("databases",), "schedule", None, expected={"databases": 2})
    assert waiting_for(plan, backup_set, read_skips(store.backend, STAMP, set_id)) == ["databases ×1"]
    assert scan_sets(store.backend, STAMP)[set_id].stored_counts == {"databases": 1}     # retention's view
    # And a restore refuses the incomplete striped backup
    with pytest.raises(PermanentError, match="incomplete"):
        backup_keys(store, STAMP, set_id, "sqlserver", "appservice_hosting")
    # Then the third stripe completes it, with four artifacts
    [completed] = h.artifact_stored(stored(store, set_id, "databases", HOSTING[2]), ctx)
    assert completed.payload.artifacts == 4 and read_marker(store.backend, STAMP, set_id) is not None
    assert backup_keys(store, STAMP, set_id, "sqlserver", "appservice_hosting") == \
        [f"{STAMP}/{set_id}/databases/{n}" for n in HOSTING]


def test_recover_plans_one_database_step_per_striped_backup_and_none_for_its_log_backups(store, ctx):  # noqa: F811
    # Given a complete set: hosting in three stripes plus one log backup, metering unstriped
    from workers.recover.contents import load
    set_id = new_backup_set_id()
    write_plan(store.backend, Plan(STAMP, set_id, ("databases",), "schedule", datetime.now(timezone.utc),
                                   expected={"databases": 2}))
    h = handler(store)
    names = [*HOSTING, "appservice_hosting.log-00000000000000004200001.trn", "appservice_metering.bak"]
    events = [stored(store, set_id, "databases", n) for n in names]
    for event in events:
        h.artifact_stored(event, ctx)
    # When recover reads what the set holds
    contents = load(store, None, STAMP, set_id, {"databases"})
    # Then there is one SQL Server step per database, hosting's size that of its three stripes
    steps = {a.database: a for a in contents.databases}
    assert sorted(steps) == ["appservice_hosting", "appservice_metering"]
    assert {a.engine for a in steps.values()} == {"sqlserver"}
    assert steps["appservice_hosting"].key.endswith(HOSTING[0])
    assert steps["appservice_hosting"].size == sum(e.payload.plaintext_size for e in events[:3])
