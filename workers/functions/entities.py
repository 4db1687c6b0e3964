"""Table entities and queue messages as JSON lines, keeping what the services know about them: every entity
property with its EDM type (Int64 stays Int64, a GUID stays a GUID), every peeked message's text as stored."""
from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterator

from azure.data.tables import EdmType, EntityProperty, TableServiceClient
from azure.storage.queue import QueueServiceClient

from workers.functions import policies
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
        client = service.get_table_client(name)
        with translated(account, f"reading the access policy of table {name}"):
            emit({"t": "table", "name": name, "policies": policies.encode(client.get_table_access_policy())})
        with translated(account, f"reading table {name}"):
            for entity in client.list_entities():
                entities += 1
                emit(entity_record(name, entity))
    return tables, entities


@dataclass
class QueueStats:
    queues: int = 0
    messages: int = 0            # copied
    counted: int = 0             # approximate messages the service counted when each queue was read
    partial: list[str] = field(default_factory=list)     # "<queue>: N of about M" for each queue not fully copied

    @property
    def missed(self) -> int:
        return max(self.counted - self.messages, 0) if self.partial else 0


def backup_queues(account: str, service: QueueServiceClient, emit: Emit, *, receive: bool = False,
                  visibility_timeout: int = 300) -> QueueStats:
    """Queues with their metadata and their messages. By default peeked: at most 32 per queue (the service's
    limit), none dequeued, so nothing a Function App waits for goes missing (a message taken by a function while
    the copy runs may or may not be in it). ``receive``: every message, by receiving each (hidden from the
    Function App for up to ``visibility_timeout`` seconds) and making it visible again at once; each copied
    message's dequeue count goes up by one (see README "Queues")."""
    stats = QueueStats()
    with translated(account, "listing queues"):
        listed = list(service.list_queues(include_metadata=True))
    for q in listed:
        stats.queues += 1
        client = service.get_queue_client(q.name)
        with translated(account, f"reading queue {q.name}"):
            count = client.get_queue_properties().approximate_message_count or 0
            emit({"t": "queue", "name": q.name, "metadata": dict(q.metadata or {}), "approximate_count": count,
                  "policies": policies.encode(client.get_queue_access_policy())})
            copied = (_received(client, q.name, emit, visibility_timeout) if receive else
                      _peeked(client, q.name, emit))
        stats.messages += copied
        stats.counted += count
        if copied < count:
            stats.partial.append(f"{q.name}: {copied} of about {count}")
    return stats


def _message(queue: str, m) -> dict:
    return {"t": "message", "queue": queue, "content": m.content, "dequeue_count": m.dequeue_count,
            "inserted_on": m.inserted_on.isoformat() if m.inserted_on else None,
            "expires_on": m.expires_on.isoformat() if m.expires_on else None}


def _peeked(client, queue: str, emit: Emit) -> int:
    peeked = list(client.peek_messages(max_messages=PEEK_LIMIT))
    for m in peeked:
        emit(_message(queue, m))
    return len(peeked)


def _received(client, queue: str, emit: Emit, visibility_timeout: int) -> int:
    """Every message: received in batches of 32, each hidden until the whole queue is copied (so the next batch
    holds new ones), then all made visible again at once, also when the copy fails (or, if this process dies,
    by the service after ``visibility_timeout``). Stops when a batch is empty or repeats a message (a copy
    slower than the timeout: that message became visible again)."""
    taken: dict[str, str] = {}          # message id -> pop receipt
    try:
        while True:
            batch = list(client.receive_messages(messages_per_page=PEEK_LIMIT, max_messages=PEEK_LIMIT,
                                                 visibility_timeout=visibility_timeout))
            fresh = [m for m in batch if m.id not in taken]
            for m in batch:
                taken[m.id] = m.pop_receipt
            for m in fresh:
                record = _message(queue, m)
                record["dequeue_count"] = max((m.dequeue_count or 1) - 1, 0)   # as it was before this copy
                emit(record)
            if not fresh or len(fresh) < len(batch):
                return len(taken)
    finally:
        for message_id, receipt in taken.items():
            client.update_message(message_id, pop_receipt=receipt, visibility_timeout=0)


def iter_lines(stream) -> Iterator[dict]:
    import json
    for line in stream:
        if line.strip():
            yield json.loads(line)
