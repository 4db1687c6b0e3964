"""One error hierarchy. Where an error happens decides whether it is transient or permanent, and a
permanent error carries a how-to-fix hint for the operator."""
from __future__ import annotations

from datetime import datetime, timezone

from pydantic import ValidationError

from contracts.errors import ContractError

UNEXPECTED_HINT = ("An unexpected error (likely a bug or an unclassified failure). The worker log has the "
                   "traceback under this event id; fix the cause, then `appsvc-dr dlq replay <worker>`.")


class DrError(Exception):
    """Base of appservice-dr errors. ``hint`` says how to fix it."""

    default_hint = "See the worker log for details."

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint or self.default_hint


class TransientError(DrError):
    """Worth retrying later (network, timeouts, 5xx, server restarting). ``delay`` overrides the backoff.

    ``until`` (a time) keeps the job retrying past the end of the backoff list, at its last (longest) step,
    for as long as the clock is before it, whatever the attempt count; the handler itself decides what
    happens after that (typically a PermanentError). Without ``until``, or once it has passed, the backoff
    list bounds the retries as usual."""

    default_hint = "Usually clears on its own; the job is retried with backoff."

    def __init__(self, message: str, *, hint: str | None = None, delay: float | None = None,
                 until: datetime | None = None) -> None:
        super().__init__(message, hint=hint)
        self.delay = delay
        self.until = until.astimezone(timezone.utc) if until and until.tzinfo else \
            until.replace(tzinfo=timezone.utc) if until else None

    def retry_beyond_backoff(self, now: datetime) -> bool:
        """True while ``until`` is still ahead of ``now``: keep retrying even with the backoff used up."""
        return self.until is not None and now < self.until


class PermanentError(DrError):
    """Will fail the same way every time until someone fixes the cause: dead-letter at once."""

    default_hint = "Fix the cause named in the message, then `appsvc-dr dlq replay <worker>`."


class ConfigurationError(DrError):
    """The configuration is wrong: the worker refuses to start."""

    default_hint = "Fix the setting named in the message (`appsvc-dr config check` validates a configuration)."


class DuplicateJob(Exception):
    """Raised by a handler when the job this event asks for already runs under another event (a redelivered
    or re-published request): the delivery is acked without follow-ups, logged, and counted
    (``appsvc_dr_events_consumed{outcome="duplicate"}``). Not an error: the running job emits the results."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def is_permanent(exc: BaseException) -> bool:
    return isinstance(exc, (PermanentError, ConfigurationError, ContractError))


def hint_for(exc: BaseException) -> str:
    if isinstance(exc, DrError):
        return exc.hint
    if isinstance(exc, ContractError):
        return ("The message does not match the published JSON Schema (contracts/schemas). Fix the producer, "
                "or correct the message and `appsvc-dr dlq replay`.")
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return TransientError.default_hint
    return UNEXPECTED_HINT


def describe(exc: BaseException) -> str:
    """A one-line message for operators. Never includes payload contents."""
    if isinstance(exc, DrError):
        return exc.message
    if isinstance(exc, ValidationError):  # its str() echoes input values, which may be secret
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors(include_url=False, include_input=False))
        return f"ValidationError in {exc.title}: {problems}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
