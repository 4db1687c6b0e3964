"""Staged files and drop locations named by events: an absolute local path or a UNC path on an SMB share.

Each is opened as (backend, key) so reading, stat and delete go through the same classified storage code.
"""
from __future__ import annotations

import ntpath
import os
import re

from workers.runtime.config import StagingSettings
from workers.storage.base import InvalidArgument, StorageBackend

_UNC = re.compile(r"^\\\\[^\\/]+\\[^\\/]+(\\[^\\/]+)*$")


def locate(path: str, staging: StagingSettings) -> tuple[StorageBackend, str]:
    """The backend holding ``path`` and the file's key in it."""
    if _UNC.match(path):
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
