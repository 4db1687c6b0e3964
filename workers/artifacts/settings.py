"""The artifacts library's settings: the retention section (``APPSVC_DR_RETENTION__<FIELD>``: which backup sets
of a stamp to keep, and how long a set may wait for its plan; durations read ``30d``, ``12h``, ISO 8601 ``P30D``
or seconds) and the verify modes of a stored artifact (chosen in the upload section)."""
from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from workers.runtime.parsing import short_duration

VerifyMode = Literal["stat", "read-back"]  # how a stored artifact is checked: size via stat, or re-read and hashed


class RetentionSettings(BaseModel, extra="forbid"):
    """Which backup sets of a stamp to keep (see ``workers.artifacts.retention`` for the rules)."""

    keep_last: int = Field(default=7, ge=0, description="Newest complete backup sets to keep (the newest "
                                                         "complete set is always kept, even with 0)")
    keep_within: timedelta | None = Field(default=None, description="Also keep every set (complete or not) "
                                          "younger than this, e.g. 30d, 12h or ISO 8601 P30D")
    auto: bool = Field(default=True, description="The catalog worker applies retention whenever a set completes")
    set_deadline: timedelta = Field(default=timedelta(hours=6), description="How long after its time (in its id) "
                                    "a backup set may still get its plan: artifacts for an unplanned set are retried "
                                    "until then, and dead-lettered after")
    incomplete_grace: timedelta | None = Field(default=None, description="Incomplete sets younger than this are "
                                               "never deleted (they may still complete); default: set_deadline")

    @field_validator("keep_within", "set_deadline", "incomplete_grace", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return short_duration(value)

    @field_validator("keep_within", "set_deadline", "incomplete_grace")
    @classmethod
    def _positive(cls, value: timedelta | None, info: ValidationInfo) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError(f"{info.field_name} must be longer than 0 seconds")
        return value

    @property
    def grace(self) -> timedelta:
        """How long an incomplete set is kept at least: ``incomplete_grace``, else the set deadline."""
        return self.incomplete_grace or self.set_deadline
