"""The artifact store the CLI commands read and write, built from the settings as the workers build theirs."""
from __future__ import annotations

from workers.artifacts.service import ArtifactStore
from workers.config import Settings


def artifact_store(settings: Settings) -> ArtifactStore:
    """The configured store with the configured encryption and signing Trust; a bad certificate or key stops the
    command at start (ConfigurationError)."""
    return ArtifactStore.from_settings(settings.store, settings.encryption, verify=settings.upload.verify)
