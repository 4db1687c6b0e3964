"""The scheduler's settings section (``APPSVC_DR_SCHEDULE__<FIELD>``), so deploy files configure the schedule
without command-line flags. ``appsvc-dr schedule --cron/--every`` flags, when given, replace ``cron``."""
from __future__ import annotations

import json
from typing import Annotated

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode

from workers.runtime.parsing import comma_list


class ScheduleSettings(BaseModel, extra="forbid"):
    cron: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description='Schedule entries "CRON[=COMPONENTS]", e.g. "0 * * * *=databases"; several are '
        'separated by ";" (or given as a JSON list). Empty: daily at 00:00 UTC, every component of the site '
        '(unless `schedule --cron/--every` says otherwise).')
    timezone: str = Field(default="UTC", description="IANA time zone the cron expressions are read in, e.g. "
                          "Europe/Berlin (slots are stored and reported in UTC)")
    catch_up: bool = Field(default=True, description="On start, publish the newest slot missed while no "
                           "scheduler ran, once (reason catch-up)")
    keep_claims: int = Field(default=50, ge=2, description="Slot claims kept in the store per schedule "
                             "(older ones are deleted; the newest is what catch-up compares with)")

    @field_validator("cron", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [entry.strip() for entry in text.split(";") if entry.strip()]
        return value

    @field_validator("cron")
    @classmethod
    def _entries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            expression, _, components = entry.partition("=")
            if len(expression.split()) != 5 or (("=" in entry) and not comma_list(components)):
                raise ValueError(f"schedule entry {entry!r} is not 'CRON[=COMPONENTS]' with a 5-field cron "
                                 "expression, e.g. '0 2 * * *=fileshare,secrets'")
        return value
