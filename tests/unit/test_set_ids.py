"""Backup-set ids an outsider dates in the future, and sets nobody planned: refused where they enter."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from contracts import BackupDue, BackupDuePayload, ContractError, default_registry, new_backup_set_id
from workers.artifacts.retention import SetState, decide
from workers.artifacts.sets import Plan, id_time, require_plan, write_plan
from workers.runtime.errors import PermanentError, TransientError
from workers.storage.local import LocalStore

NOW = datetime.now(timezone.utc)


def due(set_id: str) -> BackupDue:
    return BackupDue(source="cli", stamp="stamp1", correlation_id=set_id,
                     payload=BackupDuePayload(backup_set_id=set_id))


def test_an_event_whose_set_id_is_dated_in_the_future_is_malformed_with_the_reason():
    # Given a backup-due as a producer with a wrong clock (or an attacker) sends it: an id dated in a year
    body = json.loads(due(new_backup_set_id()).to_json())
    future = new_backup_set_id(NOW + timedelta(days=365))
    body["correlation_id"] = body["payload"]["backup_set_id"] = future
    # When a worker decodes it / Then it is refused as invalid, naming the id and how to fix it
    with pytest.raises(ContractError) as refused:
        default_registry().decode(json.dumps(body).encode())
    assert refused.value.reason == "invalid" and future in refused.value.detail
    assert "dated more than 10 minutes in the future" in refused.value.detail and "clock" in refused.value.detail
    # And a producer cannot even build one
    with pytest.raises(ValidationError):
        due(future)


def test_ids_within_the_clock_skew_and_ids_of_other_forms_are_accepted():
    # Given ids made 5 minutes ahead (clock skew between hosts), long ago, and free-form names
    for set_id in (new_backup_set_id(NOW + timedelta(minutes=5)), new_backup_set_id(datetime(2001, 1, 1)),
                   "manual-restore-test", "99991231T000000Z-notahex"):
        # When an event carries them / Then it is valid
        assert default_registry().decode(due(set_id).to_json()).correlation_id == set_id


def test_no_plan_is_retried_until_the_deadline_after_the_sets_time_then_refused(tmp_path):
    backend = LocalStore(tmp_path / "store")
    young, old = new_backup_set_id(NOW - timedelta(minutes=5)), new_backup_set_id(NOW - timedelta(hours=2))
    # Given no plans: a young set is retried, an old one (past a 1 h deadline) refused for good
    with pytest.raises(TransientError, match="no plan yet") as waiting:
        require_plan(backend, "stamp1", young, deadline=timedelta(hours=1))
    # And the retry asks to go on (past the backoff list) until the deadline after the set's time
    assert waiting.value.until == id_time(young) + timedelta(hours=1)
    with pytest.raises(PermanentError, match="never planned"):
        require_plan(backend, "stamp1", old, deadline=timedelta(hours=1))
    # And a free-form id counts from the time of the event that asks
    with pytest.raises(PermanentError):
        require_plan(backend, "stamp1", "free-form", deadline=timedelta(hours=1), since=NOW - timedelta(hours=2))
    with pytest.raises(TransientError):
        require_plan(backend, "stamp1", "free-form", deadline=timedelta(hours=1), since=NOW)
    # And a backup-due (the request the catalog plans from) waits from its own time, whatever its id says
    with pytest.raises(TransientError):
        require_plan(backend, "stamp1", old, deadline=timedelta(hours=1), since=NOW, from_event=True)
    # When the old set's plan exists, Then it is returned whatever the deadline
    write_plan(backend, Plan("stamp1", old, ("secrets",), "schedule", NOW - timedelta(hours=2)))
    assert require_plan(backend, "stamp1", old, deadline=timedelta(hours=1)).components == ("secrets",)


def test_retention_never_counts_future_sets_and_keeps_incomplete_ones_within_the_grace():
    # Given states: a future "complete" set, two genuine complete ones, an incomplete one 2 h old and one 8 h old
    states = [SetState("future", NOW + timedelta(days=1), True, future=True),
              SetState("c1", NOW - timedelta(hours=30), True), SetState("c2", NOW - timedelta(hours=1), True),
              SetState("i2", NOW - timedelta(hours=2), False), SetState("i8", NOW - timedelta(hours=8), False)]
    # When retention keeps one complete set with a 6 h grace
    plan = decide("stamp1", states, keep_last=1, now=NOW, incomplete_grace=timedelta(hours=6))
    # Then the newest genuine set is the kept one, the future one is ignored, i2 is within the grace
    assert plan.reasons["c2"] == "newest complete set (always kept)" and "future" in plan.reasons["future"]
    assert "grace" in plan.reasons["i2"] and plan.delete == ["i8", "c1"]
    assert plan.incomplete_deleted == ["i8"]
