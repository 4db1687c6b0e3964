"""Middleware hooks: all no-ops by default. A failing hook is logged and never kills the worker."""
from __future__ import annotations

import logging
from typing import Iterable

log = logging.getLogger("appsvc_dr.middleware")


class Middleware:
    """Override what you need. ``outcome`` is one of ok, retried, dead_lettered, rejected, duplicate
    (acked without running: another event's job does that work, see ``DuplicateJob``)."""

    def on_boot(self, worker: str) -> None: ...

    def on_connection(self, worker: str, connected: bool) -> None: ...

    def before_job(self, worker: str, event_type: str) -> None: ...

    def after_job(self, worker: str, event_type: str, outcome: str, duration: float | None) -> None: ...

    def on_retry(self, worker: str, event_type: str, delay: float) -> None: ...

    def on_dead_letter(self, worker: str, event_type: str, reason: str) -> None: ...

    def on_published(self, worker: str, event_type: str) -> None: ...

    def on_progress(self, worker: str, kind: str, nbytes: int) -> None: ...

    def on_shutdown(self, worker: str) -> None: ...


class Hooks:
    """Calls every middleware's hook; an exception in one is logged and swallowed."""

    def __init__(self, middleware: Iterable[Middleware] = ()) -> None:
        self.middleware = tuple(middleware)  # fixed: each hook's callers are cached on first use

    def __getattr__(self, hook: str):
        """Built once per hook name, then cached on the instance: the hot path is one call per middleware."""
        if not hook.startswith("on_") and hook not in ("before_job", "after_job"):
            raise AttributeError(hook)
        noop = getattr(Middleware, hook, None)
        targets = [(type(mw).__name__, fn) for mw in self.middleware
                   if (fn := getattr(mw, hook, None)) is not None and getattr(type(mw), hook, None) is not noop]

        def call(*args, **kwargs) -> None:
            for name, fn in targets:
                try:
                    fn(*args, **kwargs)
                except Exception:  # noqa: BLE001 - a hook must never kill the worker
                    log.exception("middleware %s.%s failed", name, hook)
        setattr(self, hook, call)
        return call
