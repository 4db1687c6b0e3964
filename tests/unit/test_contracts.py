"""Event contracts: envelope rules, registry decoding errors, and committed JSON Schemas that are current."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from uuid import RFC_4122, UUID, SafeUUID, uuid4

import pytest
from pydantic import ValidationError

from contracts import (BackupDue, BackupDuePayload, ContractError, DatabaseBackedUp, DatabaseBackedUpPayload,
                       DatabaseBackupRequested, DatabaseBackupRequestedPayload, DatabaseLogBackupRequested,
                       DatabaseLogBackupRequestedPayload, JobFailed, JobFailedPayload, SecretsRotated,
                       SecretsRotatedPayload, default_registry, new_backup_set_id)
from contracts.schemas import SCHEMA_DIR, render, schema_filename, stale


def backup_due(**payload) -> BackupDue:
    return BackupDue(source="cli", stamp="stamp1", correlation_id="set-1",
                     payload=BackupDuePayload(backup_set_id="set-1", **payload))


def test_round_trip_through_bytes_gives_an_equal_typed_event():
    # Given an event
    event = backup_due(components=("databases",), reason="schedule")
    # When it is encoded and decoded
    decoded = default_registry().decode(event.to_json())
    # Then it is the same event, typed
    assert isinstance(decoded, BackupDue) and decoded == event


@pytest.mark.parametrize("raw, reason, words", [
    (b"\x00garbage", "not-json", "not UTF-8 JSON"),
    (b"[1, 2]", "not-an-object", "expected an object"),
    (b'{"version": 1}', "missing-type", "'type'"),
    (b'{"type": "nope", "version": 1}', "unknown-type", "known: artifact-mirrored, artifact-ready, "),
    (b'{"type": "backup-due", "version": 7}', "unknown-version", "known versions: [1]"),
    (b'{"type": "backup-due", "version": "1"}', "unknown-version", "must be an integer"),
])
def test_decode_errors_say_exactly_what_is_wrong(raw, reason, words):
    with pytest.raises(ContractError) as err:
        default_registry().decode(raw)
    assert err.value.reason == reason and words in str(err.value)


@pytest.mark.parametrize("hint", [None, ("backup-due", 1)])
@pytest.mark.parametrize("raw", [b"[" * 10_000 + b"]" * 10_000,
                                 b'{"type": "backup-due", "version": 1, "payload": ' + b"{\"a\": " * 10_000])
def test_over_deep_json_is_a_contract_error_not_a_recursion_error(raw, hint):
    # Given a body nested 10,000 levels deep (with or without a transport hint)
    # When it is decoded
    with pytest.raises(ContractError) as err:
        default_registry().decode(raw, hint)
    # Then it is refused as malformed ("too-deep"), not a RecursionError escaping to the consumer
    assert err.value.reason == "too-deep" and "nested deeper" in str(err.value)


@pytest.mark.parametrize("hint", [("backup-due", 1), ("job-failed", 1), ("backup-due", 7), ("nope", 1),
                                  (None, None), ("backup-due", [1])])
def test_a_transport_hint_never_changes_what_decode_returns_or_refuses(hint):
    # The AMQP type/version a message claims only picks the model to try first: right or wrong, the result is
    # the event the body holds, and a bad body gets the same error as without a hint
    registry, event = default_registry(), backup_due()
    assert registry.decode(event.to_json(), hint) == event
    for raw, reason in [(b'{"type": "backup-due", "version": 7}', "unknown-version"), (b"[1]", "not-an-object")]:
        with pytest.raises(ContractError) as err:
            registry.decode(raw, hint)
        assert err.value.reason == reason
    body = json.loads(event.to_json())
    body["payload"]["colour"] = "red"
    with pytest.raises(ContractError) as err:
        registry.decode(json.dumps(body), hint)
    assert err.value.reason == "invalid" and "payload.colour" in str(err.value)


def test_unknown_fields_and_bad_values_are_refused_with_their_location():
    body = json.loads(backup_due().to_json())
    body["payload"]["colour"] = "red"
    body["payload"]["reason"] = "whim"
    with pytest.raises(ContractError) as err:
        default_registry().decode(json.dumps(body))
    assert err.value.reason == "invalid"
    assert "payload.colour" in str(err.value) and "payload.reason" in str(err.value)


def test_invalid_input_values_are_not_echoed_in_errors():
    # A producer's mistake must not copy field contents (which might be sensitive) into dead-letter headers
    body = json.loads(backup_due().to_json())
    body["stamp"] = "bad stamp with SECRET-CANARY"
    with pytest.raises(ContractError) as err:
        default_registry().decode(json.dumps(body))
    assert "SECRET-CANARY" not in str(err.value)


def test_backup_set_id_must_match_the_correlation_id_and_components_must_not_repeat():
    with pytest.raises(ValidationError):
        BackupDue(source="cli", stamp="s", correlation_id="a", payload=BackupDuePayload(backup_set_id="b"))
    with pytest.raises(ValidationError):
        BackupDuePayload(backup_set_id="a", components=("secrets", "secrets"))


def test_events_are_frozen_and_times_are_utc():
    local = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    event = SecretsRotated(source="hook", stamp="s", correlation_id="c", occurred_at=local,
                           payload=SecretsRotatedPayload(drop_path=r"\\fs\drop\SystemSecrets.json",
                                                         rotated_by="ops", rotated_at=local))
    assert event.occurred_at.tzinfo == timezone.utc and event.occurred_at.hour == 10
    with pytest.raises(ValidationError):
        event.stamp = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        SecretsRotatedPayload(drop_path="relative/path.json", rotated_by="ops", rotated_at=local)
    with pytest.raises(ValidationError):
        SecretsRotated(source="hook", stamp="s", correlation_id="c", occurred_at=datetime(2026, 1, 1),
                       payload=event.payload)


def test_follow_up_keeps_stamp_and_set_and_points_at_its_cause():
    cause = backup_due()
    failed = cause.follow_up(JobFailed, JobFailedPayload(
        worker="w", failed_event_id=cause.event_id, failed_event_type=cause.type, error_class="E",
        message="m", attempts=1, will_retry=False, hint="h"), source="worker:w")
    assert (failed.stamp, failed.correlation_id, failed.causation_id) == ("stamp1", "set-1", cause.event_id)
    assert failed.event_id != cause.event_id and failed.source == "worker:w"


def test_backup_set_ids_sort_by_time_and_are_key_safe():
    early = new_backup_set_id(datetime(2026, 1, 1, tzinfo=timezone.utc))
    late = new_backup_set_id(datetime(2026, 1, 2, tzinfo=timezone.utc))
    assert early < late and early.startswith("20260101T000000Z-")
    backup_due()  # the Name pattern accepts it
    BackupDue(source="x", stamp="s", correlation_id=late, payload=BackupDuePayload(backup_set_id=late))


def test_committed_json_schemas_are_current():
    models = default_registry().models()
    assert stale(models) == [], "run `appsvc-dr contracts export` and commit contracts/schemas"
    for model in models:
        schema = json.loads((SCHEMA_DIR / schema_filename(model)).read_text())
        assert schema["properties"]["type"]["const"] == model.event_type
        assert schema["additionalProperties"] is False


def test_stale_detection_notices_a_changed_schema(tmp_path):
    models = default_registry().models()
    for model in models:
        (tmp_path / schema_filename(model)).write_text(render(model))
    assert stale(models, tmp_path) == []
    (tmp_path / schema_filename(BackupDue)).write_text("{}")
    (tmp_path / "gone.v1.schema.json").write_text("{}")
    assert stale(models, tmp_path) == [schema_filename(BackupDue), "gone.v1.schema.json"]


def test_event_id_is_a_fresh_uuid():
    assert backup_due().event_id != backup_due().event_id
    ids = {backup_due().event_id for _ in range(1000)}   # several 256-id draws of the pool
    assert len(ids) == 1000 and {i.version for i in ids} == {4} and {i.variant for i in ids} == {RFC_4122}
    # built without UUID's constructor: still exactly what UUID(bytes=..., version=4) gives
    assert all(UUID(bytes=i.bytes, version=4) == i and UUID(str(i)) == i and hash(UUID(str(i))) == hash(i)
               and i.is_safe is SafeUUID.unknown for i in ids)
    assert BackupDue(event_id=(u := uuid4()), source="x", stamp="s", correlation_id="c",
                     payload=BackupDuePayload(backup_set_id="c")).event_id == u


def test_a_forked_child_never_reuses_its_parents_event_ids():
    import os
    backup_due()  # the parent holds a partly used pool of random bytes
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report the next id and leave at once
        os.write(write, backup_due().event_id.bytes)
        os._exit(0)
    os.close(write)
    child_id = os.read(read, 16)
    os.waitpid(pid, 0)
    assert child_id != backup_due().event_id.bytes


def test_to_json_is_model_dump_json_encoded():
    event = backup_due()
    assert event.to_json() == event.model_dump_json().encode()
    assert type(event).model_validate_json(event.to_json()) == event


@pytest.mark.parametrize("event, payload", [
    (DatabaseBackupRequested, DatabaseBackupRequestedPayload),
    (DatabaseLogBackupRequested, DatabaseLogBackupRequestedPayload),
    (DatabaseBackedUp, DatabaseBackedUpPayload)])
@pytest.mark.parametrize("name", ["../appservice_hosting", "a/b", "a\\b", ".hidden", "", "x" * 124, "tab\tname",
                                  "appservice hosting"])
def test_a_database_name_that_is_not_safe_in_an_object_key_is_refused_at_the_boundary(event, payload, name):
    # Given a database event as a publisher sends it, whose database names something outside its set's folder
    good = {"database": "appservice_hosting"}
    if payload is DatabaseBackedUpPayload:
        good.update(engine="postgres", server="db1", size=1, duration_seconds=0.5, skipped_reason="skipped: test")
    body = json.loads(event(source="cli", stamp="stamp1", correlation_id="set-1", payload=payload(**good)).to_json())
    assert default_registry().decode(json.dumps(body)).payload.database == "appservice_hosting"
    body["payload"]["database"] = name
    # When it is decoded, Then it is refused (dead-lettered by the runtime) naming the field, not the value
    with pytest.raises(ContractError) as err:
        default_registry().decode(json.dumps(body))
    assert err.value.reason == "invalid" and "payload.database" in str(err.value)
