"""Event families. Each module defines its envelopes; ``ALL_EVENTS`` lists every registered model."""
from contracts.events.artifacts import ArtifactReady, ArtifactReadyPayload, ArtifactStored, \
    ArtifactStoredPayload
from contracts.events.backup import BackupDue, BackupDuePayload
from contracts.events.catalog import BackupSetCompleted, BackupSetCompletedPayload
from contracts.events.databases import DatabaseBackedUp, DatabaseBackedUpPayload, DatabaseBackupRequested, \
    DatabaseBackupRequestedPayload, DatabaseLogBackupRequested, DatabaseLogBackupRequestedPayload
from contracts.events.mirror import ArtifactMirrored, ArtifactMirroredPayload
from contracts.events.failures import JobFailed, JobFailedPayload
from contracts.events.fileshare import FileshareSynced, FileshareSyncedPayload, FileshareSyncRequested, \
    FileshareSyncRequestedPayload, SkippedFile
from contracts.events.functions import FunctionsAccountResult, FunctionsBackedUp, FunctionsBackedUpPayload
from contracts.events.secrets import SecretsRotated, SecretsRotatedPayload
from contracts.events.secrets_stored import SecretsStored, SecretsStoredPayload

ALL_EVENTS = (BackupDue, SecretsRotated, JobFailed, ArtifactReady, ArtifactStored, SecretsStored,
              BackupSetCompleted, DatabaseBackupRequested, DatabaseBackedUp, DatabaseLogBackupRequested,
              FileshareSyncRequested, FileshareSynced, FunctionsBackedUp, ArtifactMirrored)

__all__ = ["ALL_EVENTS", "ArtifactMirrored", "ArtifactMirroredPayload", "ArtifactReady", "ArtifactReadyPayload", "ArtifactStored", "ArtifactStoredPayload",
           "BackupDue", "BackupDuePayload", "BackupSetCompleted",
           "BackupSetCompletedPayload", "DatabaseBackedUp", "DatabaseBackedUpPayload",
           "DatabaseBackupRequested", "DatabaseBackupRequestedPayload", "DatabaseLogBackupRequested",
           "DatabaseLogBackupRequestedPayload",
           "FileshareSyncRequested", "FileshareSyncRequestedPayload", "FileshareSynced", "FileshareSyncedPayload",
           "FunctionsAccountResult", "FunctionsBackedUp", "FunctionsBackedUpPayload",
           "JobFailed", "JobFailedPayload", "SkippedFile",
           "SecretsRotated", "SecretsRotatedPayload", "SecretsStored", "SecretsStoredPayload"]
