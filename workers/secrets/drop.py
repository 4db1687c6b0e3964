"""The rotation hook's side: copy an exported SystemSecrets.json to the drop location."""
from __future__ import annotations

import getpass
import os
from pathlib import Path

from contracts import utcnow
from workers.runtime.config import Settings
from workers.runtime.errors import ConfigurationError, PermanentError
from workers.storage.staged import join, locate


def copy_to_drop(source: Path, settings: Settings) -> str:
    """Copy ``source`` into ``secrets.drop_path`` under a unique name; return the dropped file's path."""
    drop_dir = settings.secrets.drop_path
    if not drop_dir:
        raise ConfigurationError("no drop location configured for secrets",
                                 hint=r"Set APPSVC_DR_SECRETS__DROP_PATH to a directory the secrets worker can read "
                                      r"(local path or \\server\share\dir).")
    if not source.is_file():
        raise PermanentError(f"{source} does not exist", hint="Pass the SystemSecrets.json downloaded from the "
                                                              "administrator portal.")
    size = source.stat().st_size
    if size == 0 or size > settings.secrets.max_size:
        raise PermanentError(f"{source} is {size} bytes; a SystemSecrets.json is 1..{settings.secrets.max_size}",
                             hint="Check that the right file was given.")
    name = f"SystemSecrets-{utcnow():%Y%m%dT%H%M%S%fZ}.json"
    target = join(drop_dir, name)
    backend, key = locate(target, settings.staging)
    with source.open("rb") as stream:
        backend.put(key, stream, size=size)
    return target


def rotated_by() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database in some containers
        return "unknown"
