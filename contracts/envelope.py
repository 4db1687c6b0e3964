"""The envelope every appservice-dr event shares.

An event is one pydantic model per (type, version): a subclass of :class:`Envelope` that pins ``type`` and
``version`` with ``Literal`` defaults and declares its own ``payload`` model. Models are strict, frozen and
refuse unknown fields, so a producer's typo is an error, not silently dropped data.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, ClassVar, Self
from uuid import UUID, uuid4

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

MODEL_CONFIG = ConfigDict(extra="forbid", frozen=True, strict=True)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"     # stamps and other names (also checked on store reads)
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
"""A name that is safe in object keys, queue names and file names (stamp, backup-set id, worker)."""
DATABASE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,122}$"
DatabaseName = Annotated[str, StringConstraints(pattern=DATABASE_PATTERN)]
"""A database name: it becomes an artifact :data:`Name` (``<database>.bak`` / ``.dump``) and part of object keys,
so it is a Name short enough for the longest suffix (App Service's are appservice_hosting and appservice_metering)."""


SET_ID = re.compile(r"^(\d{8}T\d{6}Z)-[0-9a-f]{8}$")
"""The form of :func:`new_backup_set_id`: the UTC time it was made, then 8 random hex digits."""
FUTURE_SKEW = timedelta(minutes=10)
"""How far ahead of this host's clock a backup-set id may be dated (clock skew between hosts)."""


def set_id_time(set_id: str) -> datetime | None:
    """The time encoded in a :func:`new_backup_set_id` id, or None for ids of another form (or an impossible
    date)."""
    match = SET_ID.match(set_id)
    if not match:
        return None
    try:
        return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def is_future(when: datetime | None, now: datetime | None = None) -> bool:
    """Whether ``when`` lies more than :data:`FUTURE_SKEW` after ``now`` (default: this host's clock)."""
    return when is not None and when > (now or utcnow()) + FUTURE_SKEW


def _not_future_dated(set_id: str) -> str:
    """A backup-set id dated in the future would become every reader's "newest" set: refused where it enters."""
    if is_future(set_id_time(set_id)):
        raise ValueError(f"backup-set id {set_id} is dated more than {int(FUTURE_SKEW.total_seconds() // 60)} "
                         "minutes in the future; ids are made by new_backup_set_id from the producer's clock "
                         "(fix the producer's clock, or publish with a new id)")
    return set_id


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
SetId = Annotated[Name, AfterValidator(_not_future_dated)]
"""A backup-set id: a :data:`Name`, and not dated in the future (see :func:`set_id_time`)."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_backup_set_id(now: datetime | None = None) -> str:
    """A sortable, key-safe backup-set id such as ``20261122T001900Z-3f2a9c1b``."""
    now = now or utcnow()
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid4().hex[:8]}"


class Payload(BaseModel):
    model_config = MODEL_CONFIG


class Envelope(BaseModel):
    """Fields common to every event. Subclasses pin ``type``/``version`` and the payload model."""

    model_config = MODEL_CONFIG
    event_type: ClassVar[str] = ""
    event_version: ClassVar[int] = 0

    event_id: UUID = Field(default_factory=uuid4, description="Unique id of this event")
    type: str = Field(description="Event type, e.g. backup-due")
    version: int = Field(description="Schema version of this event type")
    occurred_at: UtcDatetime = Field(default_factory=utcnow, description="When it happened (UTC)")
    source: str = Field(min_length=1, max_length=200, description="Producer, e.g. worker:secrets or cli")
    stamp: Name = Field(description="The App Service deployment (stamp) the event is about")
    correlation_id: SetId = Field(description="Backup-set id: every event of one recovery point shares it")
    causation_id: UUID | None = Field(default=None, description="Id of the event that caused this one")
    payload: Payload

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        type_field, version_field = cls.model_fields["type"], cls.model_fields["version"]
        if isinstance(type_field.default, str) and isinstance(version_field.default, int):
            cls.event_type, cls.event_version = type_field.default, version_field.default

    def follow_up(self, model: type[Self] | type["Envelope"], payload: Payload, *, source: str,
                  **overrides: Any) -> "Envelope":
        """A new event caused by this one: same stamp and backup set, causation id set to this event."""
        fields: dict[str, Any] = {"stamp": self.stamp, "correlation_id": self.correlation_id,
                                  "causation_id": self.event_id, "source": source, "payload": payload}
        fields.update(overrides)
        return model(**fields)

    def to_json(self) -> bytes:
        """``model_dump_json().encode()``, without the detour through ``str``."""
        return self.__pydantic_serializer__.to_json(self)

    @property
    def routing_key(self) -> str:
        return self.type
