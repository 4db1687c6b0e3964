"""The secrets worker's settings section (``APPSVC_DR_SECRETS__<FIELD>``): the drop location of exported
SystemSecrets.json files and what the worker does once one is stored."""
from __future__ import annotations

from pydantic import BaseModel, Field


class SecretsSettings(BaseModel, extra="forbid"):
    drop_path: str = Field(default="", description=r"Drop location (local dir or \\server\share\dir) where "
                           "`appsvc-dr publish secrets-rotated --file` copies SystemSecrets.json; the secrets "
                           "worker reads (and deletes) only SystemSecrets*.json files strictly inside it")
    max_size: int = Field(default=1024 * 1024, ge=2, description="Largest accepted SystemSecrets.json, bytes")
    delete_drop: bool = Field(default=True, description="Delete the plaintext file from the drop location once "
                              "the encrypted copy is verified")
    trigger_backup: bool = Field(default=True, description="Publish backup-due (reason secrets-rotated) after "
                                 "storing a new version")
