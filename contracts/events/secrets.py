"""secrets-rotated: the operator exported SystemSecrets.json after a rotation. Carries a location, never
the secrets themselves."""
from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from contracts.envelope import Envelope, Payload, UtcDatetime

_UNC = re.compile(r"^\\\\[^\\/]+\\[^\\/]+(\\[^\\/]+)*$")


def is_unc(path: str) -> bool:
    return bool(_UNC.match(path))


class SecretsRotatedPayload(Payload):
    drop_path: str = Field(min_length=1, max_length=1024,
                           description=r"Where SystemSecrets.json was dropped: \\server\share\dir\file "
                                       "(SMB UNC path) or an absolute local path")
    rotated_by: str = Field(min_length=1, max_length=200, description="Who rotated the secrets")
    rotated_at: UtcDatetime = Field(description="When the secrets were rotated (UTC)")

    @field_validator("drop_path")
    @classmethod
    def _unc_or_absolute(cls, value: str) -> str:
        if is_unc(value) or value.startswith("/") or re.match(r"^[A-Za-z]:\\", value):
            return value
        raise ValueError(r"must be a UNC path (\\server\share\file) or an absolute local path")


class SecretsRotated(Envelope):
    type: Literal["secrets-rotated"] = "secrets-rotated"
    version: Literal[1] = 1
    payload: SecretsRotatedPayload
