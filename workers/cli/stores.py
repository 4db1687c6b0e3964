"""The artifact store the CLI commands read and write, built from the settings as the workers build theirs, and
closed when the command ends (:func:`closing_stores`, around every command in ``main``): an SMB session is
logged off, an S3 connection pool emptied."""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator, TypeVar

from workers.artifacts.service import ArtifactStore
from workers.config import Settings
from workers.storage.base import StorageBackend

log = logging.getLogger("appsvc_dr.cli")
Closable = TypeVar("Closable", ArtifactStore, StorageBackend)
_opened: list[ArtifactStore | StorageBackend] = []


def artifact_store(settings: Settings) -> ArtifactStore:
    """The configured store with the configured encryption and signing Trust; a bad certificate or key stops the
    command at start (ConfigurationError)."""
    return opened(ArtifactStore.from_settings(settings.store, settings.encryption, verify=settings.upload.verify))


def opened(store: Closable) -> Closable:
    """``store``, to be closed when the command ends."""
    _opened.append(store)
    return store


@contextlib.contextmanager
def closing_stores() -> Iterator[None]:
    """Close every store a command opened when it ends, however it ends (a failing close is logged, never
    hides the command's own result or error)."""
    try:
        yield
    finally:
        while _opened:
            store = _opened.pop()
            try:
                store.close()
            except Exception as exc:  # noqa: BLE001 - closing is best effort, the command's outcome stands
                log.warning("could not close %s: %s", getattr(store, "name", store), exc)
