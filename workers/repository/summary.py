"""A snapshot's summary (``snapshots/<id>.summary.json``) as read back from the store: checked where it enters.

Its presence marks a snapshot complete; the next sync takes the newest one of the same source and sub-path as
its base (``Repository.latest``), ``fileshare list`` prints them, ``forget`` and the mirror map snapshots to
backup sets by them, and a redelivered sync re-emits its own. So a summary that is not a snapshot's (not an
object, another snapshot's id, counts that are not counts, no time) is refused with :class:`SummaryRefused`
before any of them reads a field: ``Repository.summaries`` skips it with a warning, a caller asking for one
snapshot's summary gets the error and its hint.
"""
from __future__ import annotations

import json
import re
from datetime import datetime

from contracts.envelope import NAME_PATTERN
from workers.runtime.errors import PermanentError

COUNTS = ("files", "dirs", "bytes", "new_bytes")
TEXT_LIMIT = 1024


class SummaryRefused(PermanentError):
    default_hint = ("The object is not a summary this tool wrote (damaged, or written by someone else). If the "
                    "snapshot is genuine its manifest still restores; otherwise delete the summary object so "
                    "the next sync does not find it.")


def checked_summary(raw: bytes, snapshot: str) -> dict:
    """The summary of ``snapshot`` in ``raw``, or :class:`SummaryRefused` saying which field is wrong."""
    try:
        summary = json.loads(raw)
    except ValueError as exc:
        raise SummaryRefused(f"summary of snapshot {snapshot!r} is not JSON: {exc}") from None
    if not isinstance(summary, dict):
        raise SummaryRefused(f"summary of snapshot {snapshot!r} is not an object")

    def refuse(field: str, wanted: str):
        shown = repr(summary.get(field))[:80]
        return SummaryRefused(f"summary of snapshot {snapshot!r} refused: {field!r} must be {wanted}, not {shown}")

    if summary.get("snapshot_id") != snapshot:
        raise refuse("snapshot_id", f"{snapshot!r} (the snapshot it is stored for)")
    if not isinstance(summary.get("source"), str) or len(summary["source"]) > TEXT_LIMIT:
        raise refuse("source", f"text of at most {TEXT_LIMIT} characters")
    sub_path = summary.get("sub_path")
    if sub_path is not None and (not isinstance(sub_path, str) or len(sub_path) > TEXT_LIMIT):
        raise refuse("sub_path", f"null or text of at most {TEXT_LIMIT} characters")
    set_id = summary.get("backup_set_id")
    if set_id is not None and (not isinstance(set_id, str) or not re.fullmatch(NAME_PATTERN, set_id)):
        raise refuse("backup_set_id", "null or a backup set id")
    if not isinstance(summary.get("partial"), bool):
        raise refuse("partial", "true or false")
    for field in COUNTS:
        value = summary.get(field)
        if type(value) is not int or value < 0:
            raise refuse(field, "a whole number, 0 or more")
    try:
        datetime.fromisoformat(summary.get("created_at"))           # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise refuse("created_at", "an ISO 8601 time") from None
    return summary
