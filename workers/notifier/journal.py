"""Repeats suppressed by grouping and summaries not delivered yet, kept in a small JSON file
(``NOTIFY__PENDING_FILE``) so a notifier that crashes, is killed or cannot reach its sinks at shutdown reports
them after it starts again instead of losing them.

The file is rewritten whole (temporary file + ``os.replace``, so a crash mid-write leaves the previous
version) whenever what is pending changes: a failure suppressed, a summary handed out or delivered. It holds
``job-failed`` events as they travelled on the bus (already free of secrets) and counts. A file that cannot be
read is renamed aside with a warning and the notifier starts empty; one that cannot be written is a warning
(grouping goes on in memory).
"""
from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Iterable

from pydantic import ValidationError

from contracts.events.failures import JobFailed
from workers.notifier.grouping import GroupSummary

log = logging.getLogger(__name__)
FORMAT = 1


def _summary_to_json(s: GroupSummary) -> dict:
    return {"event": json.loads(s.event.model_dump_json()), "count": s.count, "first": s.first.isoformat(),
            "last": s.last.isoformat(), "first_seen": s.first_seen.isoformat()}


def _summary_from_json(d: dict) -> GroupSummary:
    return GroupSummary(event=JobFailed.model_validate_json(json.dumps(d["event"])), count=int(d["count"]),
                        first=datetime.fromisoformat(d["first"]), last=datetime.fromisoformat(d["last"]),
                        first_seen=datetime.fromisoformat(d["first_seen"]))


class PendingJournal:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(os.path.expanduser(str(path)))
        self._lock = threading.Lock()
        self._warned = False
        self._written: str | None = None        # the body last written (no rewrite when nothing changed)

    def load(self) -> list[GroupSummary]:
        """What a previous run left pending (empty when there is no file)."""
        try:
            body = json.loads(self.path.read_text("utf-8"))
            if body.get("format") != FORMAT:
                raise ValueError(f"unknown format {body.get('format')!r}")
            return [_summary_from_json(d) for d in body["pending"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
            aside = self.path.with_name(self.path.name + ".unreadable")
            log.warning("cannot read the pending notifications in %s (%s): moved to %s, starting without them",
                        self.path, exc, aside)
            try:
                os.replace(self.path, aside)
            except OSError:
                pass
            return []

    def save(self, pending: Iterable[GroupSummary]) -> None:
        body = json.dumps({"format": FORMAT, "pending": [_summary_to_json(s) for s in pending]})
        with self._lock:
            if body == self._written:
                return
            tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_text(body, "utf-8")
                os.replace(tmp, self.path)
                self._written, self._warned = body, False
            except OSError as exc:
                if not self._warned:
                    log.warning("cannot write the pending notifications to %s (%s): a crash would lose them",
                                self.path, exc)
                self._warned = True
