"""The storage library's settings sections: where artifacts are stored (``APPSVC_DR_STORE__<FIELD>``), how they
are compressed, encrypted and signed (``APPSVC_DR_ENCRYPTION__…``), and how staged files and drop shares given
as UNC paths are reached (``APPSVC_DR_STAGING__…``). Secrets are ``SecretStr`` (print as ``**********``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from workers.runtime.parsing import comma_list


class StoreSettings(BaseModel, extra="forbid"):
    kind: Literal["local", "s3", "smb"] = "local"
    local_path: Path = Path("./demo-store")
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = ""
    s3_secret_key: SecretStr = SecretStr("")
    s3_bucket: str = "appservice-dr"
    s3_region: str | None = None
    s3_secure: bool = True
    s3_create_bucket: bool = True
    s3_part_size: int = Field(default=16 * 1024 * 1024, ge=5 * 1024 * 1024, description="Multipart part size; "
                              "memory is about 3 parts, and an object holds at most 10,000 parts (16 MiB: 156 GiB)")
    s3_object_lock: Literal["GOVERNANCE", "COMPLIANCE"] | None = Field(default=None, description="Write every "
                                                                      "object with an S3 Object Lock retention in "
                                                                      "this mode (the bucket needs Object Lock)")
    s3_lock_days: int = Field(default=0, ge=0, description="Object Lock retention in days: at least as long as "
                              "the retention policy keeps a set (keep_within, or keep_last sets' span)")
    quota_bytes: int | None = Field(default=None, gt=0, description="Space this store may use (bytes): an S3 "
                                    "bucket's quota (S3 reports no free space), or a cap on a shared volume")
    smb_path: str = ""
    smb_username: str | None = None
    smb_password: SecretStr | None = None
    smb_port: int = 445
    smb_encrypt: bool = True


class EncryptionSettings(BaseModel, extra="forbid"):
    certificate: Path | None = Field(default=None, description="PEM X.509 certificate whose public key wraps "
                                     "each artifact's data key; encryption is on whenever it is set")
    compress: bool = True
    level: int = Field(default=3, ge=1, le=19, description="zstd level")
    signing_key: Path | None = Field(default=None, description="Ed25519 private key (PEM, 0600) the workers "
                                     "sign every stored object with (`appsvc-dr keys create-signing`)")
    verify_keys: Annotated[tuple[Path, ...], NoDecode] = Field(default=(), description="Public verify key PEMs "
                                                               "(comma-separated; several during a rotation): "
                                                               "reads require a signature by one of them")
    allow_unsigned: bool = Field(default=False, description="Read legacy unsigned objects (with a warning)")

    @field_validator("verify_keys", mode="before")
    @classmethod
    def _split_verify_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return json.loads(value) if value.lstrip().startswith("[") else comma_list(value)
        return value


class StagingSettings(BaseModel, extra="forbid"):
    """Credentials for staged files and drop shares given as UNC paths in events."""

    smb_username: str | None = None
    smb_password: SecretStr | None = None
    smb_port: int = 445
    smb_encrypt: bool = True
    database_dir: str = Field(default="/var/tmp/appsvc-dr/staging", description=r"Where database backups are "
                              r"staged for the upload worker: a local directory or \\server\share\dir (SQL "
                              "Server writes there directly; its service account needs write access)")
    roots: list[str] = Field(default=[], description=r"More directories (local or \\server\share\dir) where "
                             "other producers stage files for artifact-ready; the upload worker reads and deletes "
                             "only files strictly inside database_dir or one of these (JSON list)")

    @field_validator("roots")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        for root in value:
            if not (root.startswith("/") or root.startswith("\\\\")):
                raise ValueError(rf"staging root {root!r} must be an absolute local path or \\server\share\dir")
        return value
