"""fileshare-sync-requested (an operator asks for a file-share snapshot now) and fileshare-synced (a snapshot
of the App Service file share was stored). Both live in the backup set named by the envelope's correlation_id.
"""
from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from contracts.envelope import Envelope, Name, Payload

MAX_LISTED = 100


def _relative(value: str | None) -> str | None:
    if value is None:
        return None
    parts = [p for p in re.split(r"[\\/]+", value) if p]
    if not parts or any(p in (".", "..") for p in parts) or value.startswith(("/", "\\")) or ":" in value:
        raise ValueError(r"must be a relative path inside the share, e.g. site/wwwroot (no '..', no drive)")
    return "/".join(parts)


class FileshareSyncRequestedPayload(Payload):
    sub_path: str | None = Field(default=None, max_length=1024,
                                 description="Only this directory of the share (relative, '/'-separated); "
                                             "default: the whole share")
    requested_by: str | None = Field(default=None, max_length=200)

    @field_validator("sub_path")
    @classmethod
    def _sub_path(cls, value: str | None) -> str | None:
        return _relative(value)


class FileshareSyncRequested(Envelope):
    type: Literal["fileshare-sync-requested"] = "fileshare-sync-requested"
    version: Literal[1] = 1
    payload: FileshareSyncRequestedPayload


class SkippedFile(Payload):
    path: str = Field(max_length=2048, description="Path relative to the share, '/'-separated")
    reason: str = Field(max_length=500, description="Why it is not in the snapshot, e.g. locked (sharing "
                                                    "violation) after 3 retries")


class FileshareSyncedPayload(Payload):
    snapshot_id: Name = Field(description="Snapshot id (restore with --snapshot)")
    source: str = Field(max_length=1024, description="What was read (UNC or local path; never credentials)")
    sub_path: str | None = Field(default=None, max_length=1024)
    files: int = Field(ge=0, description="Files in the snapshot")
    dirs: int = Field(ge=0, description="Directories in the snapshot (empty ones included)")
    bytes: int = Field(ge=0, description="Total size of the files in the snapshot")
    files_new: int = Field(ge=0, description="Files not in the previous snapshot")
    files_changed: int = Field(ge=0, description="Files whose size, mtime or attributes changed")
    files_unchanged: int = Field(ge=0, description="Files carried over without being read")
    files_moved: int = Field(default=0, ge=0, description="Files found under a new path with the size, mtime and "
                             "attributes of a file of the previous snapshot whose path is gone (a rename): "
                             "carried over without being read (also counted in files_unchanged)")
    files_removed: int = Field(ge=0, description="Files of the previous snapshot that are gone")
    bytes_read: int = Field(ge=0, description="Bytes read from the share")
    new_bytes: int = Field(ge=0, description="Bytes of content not stored before (deduplicated)")
    stored_bytes: int = Field(ge=0, description="Bytes written to the store for new packs (compressed, "
                                                "encrypted)")
    packs: int = Field(ge=0, description="New pack objects written")
    skipped: tuple[SkippedFile, ...] = Field(default=(), max_length=MAX_LISTED,
                                            description=f"Skipped files and directories (first {MAX_LISTED})")
    skipped_count: int = Field(default=0, ge=0)
    changed_while_read: int = Field(default=0, ge=0, description="Files still changing after re-reads: stored "
                                                                 "as last read and marked in the manifest")
    unstable: tuple[str, ...] = Field(default=(), max_length=MAX_LISTED,
                                      description=f"Paths of those files (first {MAX_LISTED}); each makes the "
                                                  "snapshot partial")
    vanished: tuple[str, ...] = Field(default=(), max_length=MAX_LISTED,
                                      description=f"Files and directories ('/' at the end) listed but gone when "
                                                  f"read (deleted during the sync; first {MAX_LISTED}): not in "
                                                  "the snapshot, which is still complete for what exists")
    vanished_count: int = Field(default=0, ge=0)
    vanished_bytes: int = Field(default=0, ge=0, description="Bytes already read of files that then vanished; "
                                "what of them was packed is referenced by no snapshot: prune counts it as "
                                "unused and reclaims it with its pack")
    partial: bool = Field(description="Something was skipped or stored while still changing: the snapshot is "
                                      "not a complete, consistent copy")
    parent_snapshot_id: Name | None = None
    manifest_key: str = Field(description="Object key of the (compressed, encrypted) snapshot manifest")
    duration_seconds: float = Field(ge=0)


class FileshareSynced(Envelope):
    type: Literal["fileshare-synced"] = "fileshare-synced"
    version: Literal[1] = 1
    payload: FileshareSyncedPayload
