"""The artifacts library's settings: the retention section (``APPSVC_DR_RETENTION__<FIELD>``: which backup sets
of a stamp to keep, and how long a set may wait for its plan; durations read ``30d``, ``12h``, ISO 8601 ``P30D``
or seconds) and the verify modes of a stored artifact (chosen in the upload section)."""
from __future__ import annotations

from datetime import timedelta
import json
from typing import Annotated, Iterable, Literal

from pydantic_settings import NoDecode
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
    set_deadline: timedelta = Field(default=timedelta(hours=6), description="The set deadline: how long after "
                                    "its time a backup set may take to complete (the catalog marks it expired and "
                                    "notifies after that) and may still get its plan (artifacts for an unplanned set "
                                    "are retried until then, and dead-lettered after)")
    component_deadlines: Annotated[dict[str, timedelta], NoDecode] = Field(default_factory=dict, description="Longer (or shorter) "
                                                      "deadlines per component, e.g. {\"fileshare\": \"12h\"}: a "
                                                      "set's deadline is the longest of its planned components'")
    rpo_objective: timedelta = Field(default=timedelta(hours=26), description="Recovery point objective: the "
                                     "newest complete set of a stamp may be at most this old (`appsvc-dr status` "
                                     "and the AppsvcDrRpoBreached alert, via appsvc_dr_rpo_objective_seconds)")
    set_check_interval: timedelta = Field(default=timedelta(seconds=60), description="How often the catalog "
                                          "checks open sets against their deadline (a set expires even when no "
                                          "further event arrives)")
    incomplete_grace: timedelta | None = Field(default=None, description="Incomplete sets younger than this are "
                                               "never deleted (they may still complete); default: set_deadline")

    @field_validator("keep_within", "set_deadline", "incomplete_grace", "set_check_interval", "rpo_objective",
                     mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return short_duration(value)

    @field_validator("component_deadlines", mode="before")
    @classmethod
    def _durations(cls, value: object) -> object:
        if isinstance(value, str) and value.lstrip().startswith("{"):     # JSON
            value = json.loads(value)
        elif isinstance(value, str):    # APPSVC_DR_RETENTION__COMPONENT_DEADLINES=fileshare=12h,databases=8h
            value = dict(part.split("=", 1) for part in value.split(",") if "=" in part)
        if isinstance(value, dict):
            return {str(k).strip(): short_duration(v.strip() if isinstance(v, str) else v) for k, v in value.items()}
        return value

    @field_validator("component_deadlines")
    @classmethod
    def _positive_each(cls, value: dict[str, timedelta]) -> dict[str, timedelta]:
        bad = [k for k, v in value.items() if v <= timedelta(0)]
        if bad:
            raise ValueError(f"component_deadlines of {', '.join(bad)} must be longer than 0 seconds")
        return value

    def deadline_for(self, components: Iterable[str]) -> timedelta:
        """A set's deadline after its time: the longest of its components' (``set_deadline`` when none is set)."""
        return max((self.component_deadlines.get(c, self.set_deadline) for c in components),
                   default=self.set_deadline)

    @field_validator("keep_within", "set_deadline", "incomplete_grace", "set_check_interval", "rpo_objective")
    @classmethod
    def _positive(cls, value: timedelta | None, info: ValidationInfo) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError(f"{info.field_name} must be longer than 0 seconds")
        return value

    @property
    def grace(self) -> timedelta:
        """How long an incomplete set is kept at least: ``incomplete_grace``, else the set deadline."""
        return self.incomplete_grace or self.set_deadline
