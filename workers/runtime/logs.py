"""Structured logs: every line carries the worker, event id and backup-set id of the job that wrote it.

The ids live in context variables set by the runtime around each job, so any module's logger (storage,
engines) gets them without passing adapters around.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from datetime import datetime, timezone
from typing import Iterator

_job = contextvars.ContextVar("job", default=("-", "-", "-"))  # (worker, event id, backup-set id): one variable,
#                                                                  so entering a job is one set and one reset


class job_context:  # noqa: N801 - used like a function: `with job_context(...)`; a class is cheaper per job
    """Sets the worker, event id and backup-set id seen by every log line inside the block."""

    __slots__ = ("values", "token")

    def __init__(self, worker: str, event_id: str | None, backup_set_id: str | None) -> None:
        self.values = (worker, event_id or "-", backup_set_id or "-")

    def __enter__(self) -> None:
        self.token = _job.set(self.values)

    def __exit__(self, *exc) -> None:
        _job.reset(self.token)


@contextlib.contextmanager
def worker_context(worker: str) -> Iterator[None]:
    _, event_id, set_id = _job.get()
    token = _job.set((worker, event_id, set_id))
    try:
        yield
    finally:
        _job.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.worker, record.event_id, record.backup_set_id = _job.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "msg": record.getMessage(),
            "worker": getattr(record, "worker", "-"), "event_id": getattr(record, "event_id", "-"),
            "backup_set_id": getattr(record, "backup_set_id", "-"),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


TEXT_FORMAT = ("%(asctime)s %(levelname)s %(worker)s event=%(event_id)s set=%(backup_set_id)s "
               "%(name)s: %(message)s")


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written (a CLI run inside a host that swaps it, like pytest's
    capture, never writes to a stream closed since ``configure``)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class DrLogHandler(logging.StreamHandler):
    """The handler :func:`configure` installs (a second call replaces it instead of adding another)."""


def configure(fmt: str = "text", level: str = "INFO", stream=None) -> None:
    handler = DrLogHandler(stream or _CurrentStderr())
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, DrLogHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("pika").setLevel(logging.WARNING)
