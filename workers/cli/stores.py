"""The artifact store the CLI commands read and write, built from the settings as the workers build theirs, and
closed when the command ends (:func:`closing_stores`, around every command in ``main``): an SMB session is
logged off, an S3 connection pool emptied.

Which copy: ``--store primary|NAME`` (before the command, or on restore, drill, artifacts and retention) picks
the primary store or one mirror target (``APPSVC_DR_MIRROR__TARGETS``) alone. Without it, and with mirror targets
configured, reads fall back from the primary to the targets (``workers.storage.fallback``), saying so."""
from __future__ import annotations

import argparse
import contextlib
import logging
from typing import Any, Iterator, TypeVar

from workers.artifacts.service import ArtifactStore
from workers.config import Settings
from workers.mirror.sync import expected
from workers.storage.base import StorageBackend
from workers.storage.factory import build_store
from workers.storage.fallback import with_copies
from workers.storage.signing import attach, trust_from_settings

log = logging.getLogger("appsvc_dr.cli")
Closable = TypeVar("Closable", ArtifactStore, StorageBackend)
_opened: list[ArtifactStore | StorageBackend] = []


_choice: list[str] = []          # what --store named (argparse sets it wherever the option was given)


class _StoreChoice(argparse.Action):
    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        _choice[:] = [str(values)]


def add_store_option(parser: argparse.ArgumentParser) -> None:
    """``--store primary|NAME`` on ``parser`` (the top-level parser and each command that reads the store). Parsers
    are built afresh for every command line, so the choice of an earlier one is forgotten here."""
    _choice.clear()
    parser.add_argument("--store", metavar="primary|NAME", action=_StoreChoice, default=argparse.SUPPRESS,
                        help="read (and write) only this copy: the primary store or a mirror target by name "
                             "(default: the primary, falling back to the mirror targets)")


def chosen_store() -> str | None:
    return _choice[0] if _choice else None


def reading_backend(settings: Settings) -> StorageBackend:
    """The backend commands read: the chosen copy, else the primary with fallback to the mirror targets."""
    name = chosen_store()
    if name not in (None, "primary"):
        return build_store(settings.mirror.target(name).store_settings())
    primary = build_store(settings.store)
    if name == "primary" or not settings.mirror.fallback:
        return primary
    return with_copies(primary, [(t.name, build_store(t.store_settings())) for t in settings.mirror.targets],
                       expected=expected if settings.mirror.verify_reads else None)


def writing_backend(settings: Settings) -> StorageBackend:
    """The one copy a command that deletes works on (retention): the chosen copy, else the primary."""
    name = chosen_store()
    if name not in (None, "primary"):
        return opened(attach(build_store(settings.mirror.target(name).store_settings()),
                             trust_from_settings(settings.encryption)))
    return opened(attach(build_store(settings.store), trust_from_settings(settings.encryption)))


def backend_for_reading(settings: Settings) -> StorageBackend:
    """:func:`reading_backend` with the configured signing Trust attached, closed when the command ends."""
    return opened(attach(reading_backend(settings), trust_from_settings(settings.encryption)))


def artifact_store(settings: Settings) -> ArtifactStore:
    """The configured store (see :func:`reading_backend`) with the configured encryption and signing Trust; a bad
    certificate or key stops the command at start (ConfigurationError)."""
    return opened(ArtifactStore.from_settings(settings.store, settings.encryption, verify=settings.upload.verify,
                                              backend=reading_backend(settings)))


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
