"""The `functions` settings (accounts as connection strings or name + key / SAS, secrets masked) and the
EDM-typed entity encoding the manifest keeps (what a restore hands back to the Table service)."""
from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from azure.data.tables import EdmType, EntityProperty
from pydantic import ValidationError

from workers.functions.entities import decode_value, encode_value, entity_of, entity_record
from workers.functions.settings import FunctionsSettings, StorageAccount


def test_an_account_key_builds_an_azure_stack_hub_connection_string_and_is_never_shown():
    account = StorageAccount(name="funcstore", account_key="c2VjcmV0LWtleQ==",
                             endpoint_suffix="local.azurestack.external")
    assert account.connection() == ("DefaultEndpointsProtocol=https;AccountName=funcstore;"
                                    "EndpointSuffix=local.azurestack.external;AccountKey=c2VjcmV0LWtleQ==")
    assert "c2VjcmV0LWtleQ" not in repr(account) and "c2VjcmV0LWtleQ" not in str(FunctionsSettings(
        accounts=[account]))


def test_a_sas_token_builds_the_three_service_endpoints():
    account = StorageAccount(name="funcstore", sas_token="?sv=2022&sig=abc", endpoint_suffix="azs.example")
    text = account.connection()
    assert "BlobEndpoint=https://funcstore.blob.azs.example;" in text
    assert "TableEndpoint=https://funcstore.table.azs.example;" in text
    assert text.endswith("SharedAccessSignature=sv=2022&sig=abc")


def test_an_account_without_credentials_or_twice_is_refused():
    with pytest.raises(ValidationError, match="connection_string, account_key or sas_token"):
        StorageAccount(name="funcstore")
    with pytest.raises(ValidationError, match="accounts repeat"):
        FunctionsSettings(accounts=[{"name": "a", "account_key": "k"}, {"name": "a", "sas_token": "s"}])


def test_entities_keep_their_edm_types_through_the_json_manifest():
    entity = {"PartitionKey": "p", "RowKey": "r", "Small": 7, "Big": EntityProperty(2**40, EdmType.INT64),
              "Wide": 2**40, "Ratio": 0.5, "Ok": False, "Id": uuid.UUID(int=5), "Raw": b"\x00\xff",
              "At": dt.datetime(2026, 12, 1, 10, 0, 1, 500, tzinfo=dt.timezone.utc), "Name": "x"}
    record = json.loads(json.dumps(entity_record("History", entity)))
    assert record["props"]["Big"] == ["Edm.Int64", 2**40] and record["props"]["Wide"][0] == "Edm.Int64"
    assert record["props"]["Small"] == ["Edm.Int32", 7] and record["props"]["Ok"] == ["Edm.Boolean", False]
    back = entity_of(record)
    assert back["PartitionKey"] == "p" and back["RowKey"] == "r"
    assert back["Big"] == EntityProperty(2**40, EdmType.INT64)
    assert back["Id"] == EntityProperty(uuid.UUID(int=5), EdmType.GUID)
    assert back["Raw"] == EntityProperty(b"\x00\xff", EdmType.BINARY)
    assert back["At"].value == entity["At"] and back["At"].edm_type == EdmType.DATETIME
    assert decode_value(*encode_value("x")) == "x"


def test_the_recovery_plan_names_the_restore_of_each_backed_up_account():
    from workers.recover.contents import Contents
    from workers.recover.model import FUNCTIONS, Targets
    from workers.recover.plan import build
    with_copy = Contents("stamp1", "20261203T010000Z-0a1b2c3d", functions_accounts=["funcstore"])
    step = next(s for s in build(with_copy, Targets(), {}, "SQL1") if s.kind == FUNCTIONS)
    text = " ".join(step.instructions)
    assert "appsvc-dr restore functions --stamp stamp1 --set 20261203T010000Z-0a1b2c3d --account funcstore" in text
    assert text.index("restore functions") < text.index("AzureWebJobsStorage")
    without = next(s for s in build(Contents("stamp1", "x"), Targets(), {}, "SQL1") if s.kind == FUNCTIONS)
    assert "restore functions" not in " ".join(without.instructions)
