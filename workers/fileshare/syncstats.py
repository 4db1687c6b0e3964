"""What one sync reports: the typed statistics record behind the ``fileshare-synced`` event and the snapshot's
summary (``snapshots/<id>.summary.json``, which adds the stamp, set, time and manifest key)."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class SyncStats:
    snapshot_id: str
    source: str
    sub_path: str | None
    files: int                      # in the snapshot
    dirs: int
    bytes: int                      # total size of the snapshot's files
    files_new: int
    files_changed: int
    files_unchanged: int            # carried over without being read (moved ones included)
    files_moved: int
    files_removed: int              # in the previous snapshot, gone now
    bytes_read: int
    new_bytes: int                  # content not stored before (deduplicated)
    stored_bytes: int               # written for new packs (compressed, encrypted)
    packs: int
    skipped: list[dict]             # the first 100: {"path": ..., "reason": ...}
    skipped_count: int
    changed_while_read: int
    unstable: list[str]
    vanished: list[str]
    vanished_count: int
    vanished_bytes: int
    partial: bool
    parent_snapshot_id: str | None
    duration_seconds: float

    def as_dict(self) -> dict:
        """The fields by name (JSON-ready): what the summary stores and the event carries."""
        return asdict(self)
