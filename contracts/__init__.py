"""appservice-dr event contracts: envelope, event models, registry, JSON Schema export."""
from contracts.envelope import Envelope, Payload, new_backup_set_id, utcnow
from contracts.errors import ContractError
from contracts.events import (ALL_EVENTS, ArtifactReady, ArtifactReadyPayload, ArtifactStored,
                             ArtifactStoredPayload, BackupDue, BackupDuePayload, BackupSetCompleted,
                             BackupSetCompletedPayload, JobFailed, JobFailedPayload,
                             SecretsRotated, SecretsRotatedPayload, SecretsStored, SecretsStoredPayload)
from contracts.registry import Registry


def default_registry() -> Registry:
    """A registry of every event the product knows."""
    return Registry(ALL_EVENTS)


__all__ = ["ALL_EVENTS", "ArtifactReady", "ArtifactReadyPayload", "ArtifactStored", "ArtifactStoredPayload",
           "BackupDue", "BackupDuePayload", "BackupSetCompleted",
           "BackupSetCompletedPayload", "ContractError", "Envelope", "JobFailed",
           "JobFailedPayload", "Payload", "Registry", "SecretsRotated", "SecretsRotatedPayload", "SecretsStored", "SecretsStoredPayload",
           "default_registry", "new_backup_set_id", "utcnow"]
