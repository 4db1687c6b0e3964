"""The rotation hook's side: copy an exported SystemSecrets.json to the drop location; and the one place that
says where a drop may be (the secrets worker reads only files matching :data:`DROP_NAME` inside it)."""
from __future__ import annotations

import getpass
import os
import re
from pathlib import Path
from typing import ContextManager

from contracts import utcnow
from workers.runtime.errors import ConfigurationError, PermanentError
from workers.secrets.settings import SecretsSettings
from workers.storage.settings import StagingSettings
from workers.storage.staged import Root, Staged, join, locate

DROP_SETTING = "APPSVC_DR_SECRETS__DROP_PATH"
# what `publish secrets-rotated --file` and deploy/hooks/Publish-SecretsRotated.ps1 drop (and the export's own name)
DROP_NAME = re.compile(r"SystemSecrets[A-Za-z0-9._-]*\.json", re.IGNORECASE)


def locate_drop(path: str, secrets: SecretsSettings, staging: StagingSettings) -> ContextManager[Staged]:
    """The backend and key of a dropped SystemSecrets*.json strictly inside APPSVC_DR_SECRETS__DROP_PATH
    (:class:`~workers.storage.staged.PathRefused` otherwise, before any I/O); the backend is closed when the
    ``with`` block ends."""
    return locate(path, staging, [Root(secrets.drop_path, DROP_SETTING)], what="drop path", name_pattern=DROP_NAME)


def copy_to_drop(source: Path, secrets: SecretsSettings, staging: StagingSettings) -> str:
    """Copy ``source`` into ``secrets.drop_path`` under a unique name; return the dropped file's path."""
    drop_dir = secrets.drop_path
    if not drop_dir:
        raise ConfigurationError("no drop location configured for secrets",
                                 hint=r"Set APPSVC_DR_SECRETS__DROP_PATH to a directory the secrets worker can read "
                                      r"(local path or \\server\share\dir).")
    if not source.is_file():
        raise PermanentError(f"{source} does not exist", hint="Pass the SystemSecrets.json downloaded from the "
                                                              "administrator portal.")
    size = source.stat().st_size
    if size == 0 or size > secrets.max_size:
        raise PermanentError(f"{source} is {size} bytes; a SystemSecrets.json is 1..{secrets.max_size}",
                             hint="Check that the right file was given.")
    name = f"SystemSecrets-{utcnow():%Y%m%dT%H%M%S%fZ}.json"
    target = join(drop_dir, name)
    with locate_drop(target, secrets, staging) as (backend, key), source.open("rb") as stream:
        backend.put(key, stream, size=size)
    return target


def rotated_by() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database in some containers
        return "unknown"
