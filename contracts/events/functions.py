"""functions-backed-up: the storage account(s) a site's Function Apps depend on (AzureWebJobsStorage,
AzureWebJobsDashboard) were copied into the backup set named by the envelope's correlation_id."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from contracts.envelope import Envelope, Name, Payload

MAX_LISTED = 100


class FunctionsAccountResult(Payload):
    account: Name = Field(description="The configured account name (never its key or connection string)")
    manifest_key: str = Field(max_length=1024, description="Object key of the account's (encrypted) manifest")
    containers: int = Field(ge=0)
    blobs: int = Field(ge=0, description="Blobs in the copy")
    bytes: int = Field(ge=0, description="Total size of those blobs")
    blob_snapshots: int = Field(default=0, ge=0, description="Of the blobs, blob snapshots (each restored as a "
                                "new snapshot of its blob, taken at restore time)")
    blobs_read: int = Field(ge=0, description="Blobs downloaded (new or changed ETag)")
    blobs_unchanged: int = Field(ge=0, description="Blobs carried over from the previous copy without a read")
    bytes_read: int = Field(ge=0)
    queues: int = Field(ge=0)
    messages: int = Field(ge=0, description="Messages copied (peeked: a point-in-time copy, none consumed)")
    messages_not_copied: int = Field(default=0, ge=0, description="Messages beyond what a peek returns (32 per "
                                     "queue): counted by the service, not in the copy")
    messages_counted: int = Field(default=0, ge=0, description="Messages the service counted in the queues "
                                  "(approximate_message_count) when each was copied: `messages` of about this many")
    queues_partial: tuple[str, ...] = Field(default=(), max_length=MAX_LISTED, description="Each queue not "
                                            "copied in full: '<queue>: N of about M'")
    tables: int = Field(ge=0)
    entities: int = Field(ge=0)
    items_refused: int = Field(default=0, ge=0, description="Blobs, messages, entities (or whole containers, "
                               "queues, tables) left out of the copy because its restore would refuse them")
    refused: tuple[str, ...] = Field(default=(), max_length=MAX_LISTED, description="The first of them: "
                                     "'<kind> <name>: <reason>'")


class FunctionsBackedUpPayload(Payload):
    accounts: tuple[FunctionsAccountResult, ...] = Field(min_length=1, max_length=MAX_LISTED)
    partial: bool = Field(description="Some queue held more messages than a peek can copy, or some item was left "
                          "out because its restore would refuse it")
    duration_seconds: float = Field(ge=0)


class FunctionsBackedUp(Envelope):
    type: Literal["functions-backed-up"] = "functions-backed-up"
    version: Literal[1] = 1
    payload: FunctionsBackedUpPayload
