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

_worker = contextvars.ContextVar("worker", default="-")
_event_id = contextvars.ContextVar("event_id", default="-")
_set_id = contextvars.ContextVar("backup_set_id", default="-")


@contextlib.contextmanager
def job_context(worker: str, event_id: str | None, backup_set_id: str | None) -> Iterator[None]:
    tokens = (_worker.set(worker), _event_id.set(event_id or "-"), _set_id.set(backup_set_id or "-"))
    try:
        yield
    finally:
        for var, token in zip((_worker, _event_id, _set_id), tokens):
            var.reset(token)


@contextlib.contextmanager
def worker_context(worker: str) -> Iterator[None]:
    token = _worker.set(worker)
    try:
        yield
    finally:
        _worker.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = _worker.get()
        record.event_id = _event_id.get()
        record.backup_set_id = _set_id.get()
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


def configure(fmt: str = "text", level: str = "INFO", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_appsvc_dr", False):
            root.removeHandler(old)
    handler._appsvc_dr = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("pika").setLevel(logging.WARNING)
