"""The mirror section (``APPSVC_DR_MIRROR__…``): secondary targets every stored object is copied to.

``APPSVC_DR_MIRROR__TARGETS`` is a JSON list; each target has a ``name`` and the fields of the store section
(``kind``, ``s3_endpoint``, ``s3_bucket``, ``smb_path``, ``local_path``, ``s3_object_lock``, … — secrets are
``SecretStr``) plus its own retention (``keep_last`` / ``keep_within``; default: the retention section's).
"""
from __future__ import annotations

import re
from datetime import timedelta

from pydantic import BaseModel, Field, field_validator, model_validator

from workers.runtime.errors import ConfigurationError
from workers.runtime.parsing import short_duration
from workers.storage.settings import StoreSettings

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


class MirrorTarget(StoreSettings):
    name: str = Field(description="How commands and metrics call this copy (--store NAME, {target=NAME})")
    keep_last: int | None = Field(default=None, ge=0, description="Complete sets this copy keeps (default: "
                                                                  "APPSVC_DR_RETENTION__KEEP_LAST)")
    keep_within: timedelta | None = Field(default=None, description="Also keep every set younger than this")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value) or value == "primary":
            raise ValueError(f"mirror target name {value!r}: use 1-40 lower-case letters, digits or '-' (not "
                             "'primary')")
        return value

    @field_validator("keep_within", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return short_duration(value)

    def store_settings(self) -> StoreSettings:
        """This target as a store section (what ``build_store`` takes)."""
        return StoreSettings(**self.model_dump(include=set(StoreSettings.model_fields)))


class MirrorSettings(BaseModel, extra="forbid"):
    targets: list[MirrorTarget] = Field(default=[], description="Secondary stores (JSON list)")
    retry_for: timedelta = Field(default=timedelta(days=7), description="How long a copy to a target that is "
                                 "down keeps being retried (the backlog catches up when it returns)")
    catch_up_interval: timedelta = Field(default=timedelta(minutes=5), description="How often the worker's timer "
                                         "reconciles every stamp with each target (copies a backlog when no event "
                                         "arrives, e.g. a target back after an outage; applies each target's "
                                         "retention)")
    catch_up_objects: int = Field(default=500, ge=1, description="Objects one catch-up tick copies at most (the "
                                  "rest waits for the next tick)")
    catch_up_bytes: int = Field(default=8 << 30, ge=1, description="Bytes one catch-up tick copies at most (about: "
                                "an object is copied whole)")
    fallback: bool = Field(default=True, description="Reads fall back to a target when the primary is down or "
                           "an object there fails verification")
    verify_reads: bool = Field(default=True, description="With fallback: hash a recorded artifact on the copy "
                               "before reading it (one extra read), so a damaged primary object is read from a "
                               "target; false: fall back only when the primary cannot be read")

    @field_validator("retry_for", "catch_up_interval", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return short_duration(value)

    @model_validator(mode="after")
    def _unique(self) -> "MirrorSettings":
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError(f"mirror target names repeat: {names}")
        return self

    def target(self, name: str) -> MirrorTarget:
        for target in self.targets:
            if target.name == name:
                return target
        raise ConfigurationError(f"no mirror target named {name!r}", hint="Mirror targets configured: "
                                 f"{', '.join(t.name for t in self.targets) or 'none'} (APPSVC_DR_MIRROR__TARGETS); "
                                 "--store primary reads the primary store.")
