"""The one error raised when bytes on the wire are not a valid event."""
from __future__ import annotations


class ContractError(ValueError):
    """Raw bytes are not a valid event. ``reason`` is a short machine-readable kind, ``str()`` the detail.

    Reasons: ``not-json``, ``not-an-object``, ``missing-type``, ``unknown-type``, ``unknown-version``,
    ``invalid``, ``too-deep`` (nesting beyond the JSON parser's recursion limit).
    """

    def __init__(self, reason: str, detail: str, *, event_type: str | None = None,
                 event_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.event_type = event_type
        self.event_id = event_id
