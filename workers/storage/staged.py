"""Staged files and drop locations named by events: an absolute local path or a UNC path on an SMB share.

Each is opened as (backend, key) so reading, stat and delete go through the same classified storage code.
"""
from __future__ import annotations

import ntpath
import os
import posixpath

from contracts.events.secrets import is_unc as _well_formed_unc
from workers.runtime.config import StagingSettings
from workers.storage.base import InvalidArgument, StorageBackend


def is_unc(path: str) -> bool:
    """Whether ``path`` is meant as an SMB location (``\\\\server\\share...``); :func:`locate` validates it."""
    return path.startswith("\\\\")


def join(directory: str, name: str) -> str:
    """``name`` inside ``directory``, with the separator of a UNC or a local path."""
    return (ntpath.join if is_unc(directory) else posixpath.join)(directory, name)


def locate(path: str, staging: StagingSettings) -> tuple[StorageBackend, str]:
    """The backend holding ``path`` and the file's key in it."""
    if _well_formed_unc(path):
        from workers.storage.smb import SmbStore
        directory, name = ntpath.split(path)
        if directory.count("\\") < 3:
            raise InvalidArgument(f"staged path {path!r} names a share, not a file on it",
                                  hint=r"Use \\server\share\file or \\server\share\dir\file.")
        return SmbStore(directory, staging.smb_username, staging.smb_password, port=staging.smb_port,
                        encrypt=staging.smb_encrypt), name
    if os.path.isabs(path):
        from workers.storage.local import LocalStore
        directory, name = os.path.split(path)
        return LocalStore(directory, create=False), name
    raise InvalidArgument(f"staged path {path!r} is neither absolute nor a UNC path",
                          hint=r"Producers must send an absolute local path or \\server\share\path.")
