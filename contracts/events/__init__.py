"""Event families. Each module defines its envelopes; ``ALL_EVENTS`` lists every registered model."""
from contracts.events.artifacts import ArtifactReady, ArtifactReadyPayload, ArtifactStored, \
    ArtifactStoredPayload
from contracts.events.backup import BackupDue, BackupDuePayload
from contracts.events.catalog import BackupSetCompleted, BackupSetCompletedPayload
from contracts.events.failures import JobFailed, JobFailedPayload
from contracts.events.secrets import SecretsRotated, SecretsRotatedPayload
from contracts.events.secrets_stored import SecretsStored, SecretsStoredPayload

ALL_EVENTS = (BackupDue, SecretsRotated, JobFailed, ArtifactReady, ArtifactStored, SecretsStored,
              BackupSetCompleted)

__all__ = ["ALL_EVENTS", "ArtifactReady", "ArtifactReadyPayload", "ArtifactStored", "ArtifactStoredPayload",
           "BackupDue", "BackupDuePayload", "BackupSetCompleted",
           "BackupSetCompletedPayload", "JobFailed", "JobFailedPayload",
           "SecretsRotated", "SecretsRotatedPayload", "SecretsStored", "SecretsStoredPayload"]
