"""A Function Apps manifest line, checked where it enters: every field a restore reads from the store is hostile
until it is parsed into one of these records (the manifest is signed, but it is read without a verify key when
none is configured, and a forged or damaged one must never make the restore read outside the account's packs,
load a huge pack into memory, write to a name the service would reinterpret, or crash halfway).

Names follow the Azure Storage rules (containers and queues: 3-63 lowercase letters, digits and single hyphens;
tables: 3-63 letters and digits, starting with a letter; blobs: 1-1024 characters, no control characters);
a blob's content must lie inside a pack of this account (``<stamp>/functions-blobs/<account>/packs/<id>``)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from workers.runtime.errors import PermanentError

CONTAINER = re.compile(r"^(?:\$root|\$web|[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62})$")
QUEUE = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")
TABLE = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")
PACK_ID = re.compile(r"^[0-9a-f]{32}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
MD5 = re.compile(r"^[0-9a-f]{32}$")
METADATA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
BLOB_TYPES = ("BlockBlob", "AppendBlob", "PageBlob")
PUBLIC_ACCESS = (None, "blob", "container")
CONTENT_SETTINGS = ("content_type", "content_encoding", "content_language", "content_disposition", "cache_control")
MAX_METADATA = 8 * 1024             # the service's limit for all names and values of one object
MAX_MESSAGE = 64 * 1024
MAX_LINE = 4 * 1024 * 1024          # an entity is at most 1 MiB; a line holds one item
HINT = ("The Function Apps manifest in the store is damaged or was not written by appservice-dr: restore from "
        "another backup set, configure APPSVC_DR_ENCRYPTION__VERIFY_KEYS so forged manifests are refused, and "
        "check who can write to the store.")


class ManifestError(PermanentError):
    default_hint = HINT


@dataclass(frozen=True)
class Loc:
    pack: str           # the pack's key, inside the account's packs/
    offset: int
    length: int


@dataclass(frozen=True)
class ContainerRecord:
    name: str
    metadata: dict[str, str]
    public_access: str | None
    policies: list


@dataclass(frozen=True)
class BlobRecord:
    container: str
    name: str
    loc: Loc
    sha256: str
    blob_type: str
    content_settings: dict[str, str | None]
    content_md5: bytes | None
    metadata: dict[str, str]
    snapshot: bool

    @property
    def what(self) -> str:
        return f"blob {self.container}/{self.name}"


@dataclass(frozen=True)
class QueueRecord:
    name: str
    metadata: dict[str, str]
    policies: list


@dataclass(frozen=True)
class MessageRecord:
    queue: str
    content: str


@dataclass(frozen=True)
class TableRecord:
    name: str
    policies: list


@dataclass(frozen=True)
class EntityRecord:
    table: str
    props: dict[str, list]      # property name -> [EDM type, value]; checked again when decoded


@dataclass(frozen=True)
class AccountRecord:
    """The first line: whose manifest this is (a manifest copied to another set or account is refused)."""
    name: str
    stamp: str
    backup_set_id: str


@dataclass(frozen=True)
class EndRecord:
    """The last line: how many items of each kind the lines before it hold (a truncated manifest is refused)."""
    counts: dict[str, int]


COUNTED = {"containers": "container", "blobs": "blob", "queues": "queue", "messages": "message",
           "tables": "table", "entities": "entity"}

Record = (AccountRecord | EndRecord | ContainerRecord | BlobRecord | QueueRecord | MessageRecord | TableRecord
          | EntityRecord)


def _fail(line: int, text: str) -> ManifestError:
    return ManifestError(f"Function Apps manifest line {line}: {text}")


def _name(r: dict, field: str, pattern: re.Pattern, what: str, line: int) -> str:
    value = r.get(field)
    if not isinstance(value, str) or not pattern.match(value):
        raise _fail(line, f"{what} name {str(value)[:80]!r} is not a valid Azure Storage {what} name")
    return value


def _metadata(value: Any, line: int) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and METADATA_NAME.match(k) and isinstance(v, str)
                                              and not CONTROL.search(v) for k, v in value.items()):
        raise _fail(line, "metadata must map valid names to strings without control characters")
    if sum(len(k) + len(v) for k, v in value.items()) > MAX_METADATA:
        raise _fail(line, f"metadata larger than the service's {MAX_METADATA} bytes")
    return dict(value)


def _policies(value: Any, line: int) -> list:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 5 or not all(
            isinstance(p, dict) and isinstance(p.get("id"), str) and 0 < len(p["id"]) <= 64
            and all(p.get(k) is None or (isinstance(p[k], str) and len(p[k]) <= 64 and not CONTROL.search(p[k]))
                    for k in ("permission", "start", "expiry")) for p in value):
        raise _fail(line, "stored access policies must be at most 5 of {id, permission, start, expiry} (strings)")
    return value


def in_packs(pack: object, packs: str) -> bool:
    """Whether ``pack`` is the key of a pack under ``packs`` (``<stamp>/functions-blobs/<account>/packs/``)."""
    return isinstance(pack, str) and pack.startswith(packs) and PACK_ID.match(pack[len(packs):]) is not None


def _loc(value: Any, pack_prefix: str, line: int) -> Loc:
    if not (isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)
            and all(type(n) is int and n >= 0 for n in value[1:])):
        raise _fail(line, "a blob's location must be [pack key, offset, length] with non-negative integers")
    pack = value[0]
    if not in_packs(pack, pack_prefix):
        raise _fail(line, f"a blob's content is outside this account's packs ({pack[:120]!r})")
    return Loc(pack, value[1], value[2])


def _container(r: dict, _: str, line: int) -> ContainerRecord:
    access = r.get("public_access")
    if access not in PUBLIC_ACCESS:
        raise _fail(line, f"public access {str(access)[:40]!r} is not one of blob, container or none")
    return ContainerRecord(_name(r, "name", CONTAINER, "container", line), _metadata(r.get("metadata"), line),
                           access, _policies(r.get("policies"), line))


def _blob(r: dict, pack_prefix: str, line: int) -> BlobRecord:
    container = _name(r, "container", CONTAINER, "container", line)
    name = r.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= 1024 or CONTROL.search(name):
        raise _fail(line, f"blob name {str(name)[:80]!r} is empty, longer than 1024 or has control characters")
    sha = r.get("sha256")
    if not isinstance(sha, str) or not SHA256.match(sha):
        raise _fail(line, "a blob's sha256 must be 64 lowercase hexadecimal digits")
    blob_type = r.get("blob_type") or "BlockBlob"
    if blob_type not in BLOB_TYPES:
        raise _fail(line, f"blob type {str(blob_type)[:40]!r} is not one of {', '.join(BLOB_TYPES)}")
    cs = r.get("content_settings") or {}
    if not isinstance(cs, dict) or not set(cs) <= {*CONTENT_SETTINGS, "content_md5"} or not all(
            v is None or (isinstance(v, str) and len(v) <= 1024 and not CONTROL.search(v)) for v in cs.values()):
        raise _fail(line, f"content settings must be {', '.join(CONTENT_SETTINGS)} and content_md5 (strings)")
    md5 = cs.get("content_md5")
    if md5 is not None and not MD5.match(md5):
        raise _fail(line, "content_md5 must be 32 lowercase hexadecimal digits")
    snapshot = r.get("snapshot")
    if snapshot is not None and not isinstance(snapshot, str):
        raise _fail(line, "a blob's snapshot must be its time as text")
    return BlobRecord(container, name, _loc(r.get("loc"), pack_prefix, line), sha, blob_type,
                      {k: cs.get(k) for k in CONTENT_SETTINGS}, bytes.fromhex(md5) if md5 else None,
                      _metadata(r.get("metadata"), line), bool(snapshot))


def _queue(r: dict, _: str, line: int) -> QueueRecord:
    return QueueRecord(_name(r, "name", QUEUE, "queue", line), _metadata(r.get("metadata"), line),
                       _policies(r.get("policies"), line))


def _message(r: dict, _: str, line: int) -> MessageRecord:
    content = r.get("content")
    if not isinstance(content, str) or len(content.encode()) > MAX_MESSAGE:
        raise _fail(line, f"a queue message must be text of at most {MAX_MESSAGE // 1024} KiB")
    return MessageRecord(_name(r, "queue", QUEUE, "queue", line), content)


def _table(r: dict, _: str, line: int) -> TableRecord:
    return TableRecord(_name(r, "name", TABLE, "table", line), _policies(r.get("policies"), line))


EDM_TEXT = ("Edm.String", "Edm.DateTime", "Edm.Binary", "Edm.Guid")


def _typed(edm: str, value: Any) -> bool:
    if edm in EDM_TEXT:
        return isinstance(value, str)
    if edm == "Edm.Boolean":
        return type(value) is bool
    if edm in ("Edm.Int32", "Edm.Int64"):
        bits = 31 if edm == "Edm.Int32" else 63
        return type(value) is int and -2**bits <= value < 2**bits
    return edm == "Edm.Double" and type(value) in (int, float)


def _entity(r: dict, _: str, line: int) -> EntityRecord:
    props = r.get("props")
    if not isinstance(props, dict) or not all(
            isinstance(k, str) and 0 < len(k) <= 255 and isinstance(v, list) and len(v) == 2
            and isinstance(v[0], str) for k, v in props.items()):
        raise _fail(line, "an entity's properties must map names to [EDM type, value]")
    for name, (edm, value) in props.items():
        if name not in ("PartitionKey", "RowKey") and not _typed(edm, value):
            raise _fail(line, f"entity property {name[:80]!r}: {str(value)[:40]!r} is not an {edm[:20]} value")
    for key in ("PartitionKey", "RowKey"):
        value = props.get(key, [None, None])[1]
        if not isinstance(value, str) or len(value) > 1024 or re.search(r"[/\\#?\x00-\x1f\x7f]", value):
            raise _fail(line, f"an entity's {key} must be text of at most 1024 characters without / \\ # ? or "
                              "control characters")
    return EntityRecord(_name(r, "table", TABLE, "table", line), props)


def _account(r: dict, _: str, line: int) -> AccountRecord:
    if r.get("format") != 1 or not all(isinstance(r.get(k), str) and 0 < len(r[k]) <= 200
                                       for k in ("name", "stamp", "backup_set_id")):
        raise _fail(line, "the account line must give format 1 and the account, stamp and backup set as text")
    return AccountRecord(r["name"], r["stamp"], r["backup_set_id"])


def _end(r: dict, _: str, line: int) -> EndRecord:
    counts = {k: r.get(k) for k in COUNTED}
    if not all(type(v) is int and v >= 0 for v in counts.values()):
        raise _fail(line, f"the end line must count {', '.join(COUNTED)}")
    return EndRecord(counts)  # type: ignore[arg-type]


PARSERS: dict[str, Callable[[dict, str, int], Record]] = {
    "account": _account, "end": _end, "container": _container, "blob": _blob, "queue": _queue, "message": _message,
    "table": _table, "entity": _entity}


def declares(r: Record) -> tuple[str, str | None]:
    """(kind, None) for a line that declares a container, queue or table; (kind, "kind:owner") for one that
    needs an earlier line to declare its owner (a manifest lists each container before its blobs)."""
    if isinstance(r, BlobRecord):
        return "blob", f"container:{r.container}"
    if isinstance(r, MessageRecord):
        return "message", f"queue:{r.queue}"
    if isinstance(r, EntityRecord):
        return "entity", f"table:{r.table}"
    return type(r).__name__.removesuffix("Record").lower(), None


def parse(item: Any, pack_prefix: str, line: int) -> Record:
    """One decoded manifest line as its record; :class:`ManifestError` naming the line and the field."""
    if not isinstance(item, dict) or item.get("t") not in PARSERS:
        raise _fail(line, f"unknown item {str(item.get('t') if isinstance(item, dict) else item)[:40]!r}")
    return PARSERS[item["t"]](item, pack_prefix, line)
