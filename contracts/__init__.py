"""appservice-dr event contracts: envelope, event models, registry, JSON Schema export.

Every event model is re-exported here; add new ones in ``contracts/events`` (ALL_EVENTS and ``__all__``).
"""
from contracts.envelope import Envelope, Payload, new_backup_set_id, utcnow
from contracts.errors import ContractError
from contracts.events import *  # noqa: F403 - the event models are this package's API
from contracts.events import ALL_EVENTS
from contracts.events import __all__ as _EVENTS
from contracts.registry import Registry


def default_registry() -> Registry:
    """A registry of every event the product knows."""
    return Registry(ALL_EVENTS)


__all__ = [*_EVENTS, "ContractError", "Envelope", "Payload", "Registry", "default_registry", "new_backup_set_id",
           "utcnow"]
