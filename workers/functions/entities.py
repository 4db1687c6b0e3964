"""Table entities and queue messages as JSON lines, keeping what the services know about them: every entity
property with its EDM type (Int64 stays Int64, a GUID stays a GUID), every peeked message's text as stored."""
from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Callable, Iterator

from azure.data.tables import EdmType, EntityProperty, TableServiceClient
from azure.storage.queue import QueueServiceClient

from workers.functions.client import translated

PEEK_LIMIT = 32          # the most messages a peek returns (the service's limit)
Emit = Callable[[dict], None]


def encode_value(value: object) -> list:
    """``[edm type, JSON value]`` for one property."""
    if isinstance(value, EntityProperty):
        edm = value.edm_type.value if isinstance(value.edm_type, EdmType) else str(value.edm_type)
        return [edm, encode_value(value.value)[1]]
    if isinstance(value, bool):
        return ["Edm.Boolean", value]
    if isinstance(value, int):
        return ["Edm.Int32" if -2**31 <= value < 2**31 else "Edm.Int64", value]
    if isinstance(value, float):
        return ["Edm.Double", value]
    if isinstance(value, datetime):
        return ["Edm.DateTime", value.isoformat()]
    if isinstance(value, (bytes, bytearray)):
        return ["Edm.Binary", base64.b64encode(bytes(value)).decode()]
    if isinstance(value, uuid.UUID):
        return ["Edm.Guid", str(value)]
    return ["Edm.String", str(value)]


def decode_value(edm: str, value: object) -> object:
    if edm == "Edm.String":
        return value
    if edm == "Edm.DateTime":
        value = datetime.fromisoformat(str(value))
    elif edm == "Edm.Binary":
        value = base64.b64decode(str(value))
    elif edm == "Edm.Guid":
        value = uuid.UUID(str(value))
    return EntityProperty(value, EdmType(edm))


def entity_record(table: str, entity: dict) -> dict:
    return {"t": "entity", "table": table, "props": {k: encode_value(v) for k, v in entity.items()}}


def entity_of(record: dict) -> dict:
    props = record["props"]
    return {k: (v if k in ("PartitionKey", "RowKey") else decode_value(edm, v)) for k, (edm, v) in props.items()}


def backup_tables(account: str, service: TableServiceClient, emit: Emit) -> tuple[int, int]:
    tables = entities = 0
    with translated(account, "listing tables"):
        names = [t.name for t in service.list_tables()]
    for name in names:
        tables += 1
        emit({"t": "table", "name": name})
        with translated(account, f"reading table {name}"):
            for entity in service.get_table_client(name).list_entities():
                entities += 1
                emit(entity_record(name, entity))
    return tables, entities


def backup_queues(account: str, service: QueueServiceClient, emit: Emit) -> tuple[int, int, int]:
    """Queues with their metadata and the messages a peek returns (none is dequeued, so nothing a Function App
    waits for goes missing; a message taken by a function while the copy runs may or may not be in it)."""
    queues = messages = missed = 0
    with translated(account, "listing queues"):
        listed = list(service.list_queues(include_metadata=True))
    for q in listed:
        queues += 1
        client = service.get_queue_client(q.name)
        with translated(account, f"reading queue {q.name}"):
            count = client.get_queue_properties().approximate_message_count or 0
            peeked = list(client.peek_messages(max_messages=PEEK_LIMIT))
        emit({"t": "queue", "name": q.name, "metadata": dict(q.metadata or {}), "approximate_count": count})
        for m in peeked:
            messages += 1
            emit({"t": "message", "queue": q.name, "content": m.content, "dequeue_count": m.dequeue_count,
                  "inserted_on": m.inserted_on.isoformat() if m.inserted_on else None,
                  "expires_on": m.expires_on.isoformat() if m.expires_on else None})
        missed += max(count - len(peeked), 0)
    return queues, messages, missed


def iter_lines(stream) -> Iterator[dict]:
    import json
    for line in stream:
        if line.strip():
            yield json.loads(line)
