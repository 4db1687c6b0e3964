"""The upload worker's settings section (``APPSVC_DR_UPLOAD__<FIELD>``). The composition builds the secrets and
file-share workers' stores with this ``verify`` mode too (they are given the mode, not this section)."""
from __future__ import annotations

from pydantic import BaseModel, Field

from workers.artifacts.settings import VerifyMode


class UploadSettings(BaseModel, extra="forbid"):
    verify: VerifyMode = Field(default="stat", description="How a stored artifact is checked: size via stat, or "
                                                           "re-read and SHA-256 of the stored bytes")
