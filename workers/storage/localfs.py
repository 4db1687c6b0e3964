"""File-system helpers shared by the local store and the workers that stage private files: what an OSError
from the store's side means (:func:`classify_os_error`, each with a hint naming the setting to check),
directories created 0700 whatever the umask (:func:`make_private_dirs`), a directory fsync that tolerates file
systems that cannot, and a modification time as an aware UTC datetime."""
from __future__ import annotations

import errno
import os
from datetime import datetime, timezone
from pathlib import Path

from workers.storage.base import (InvalidArgument, StorageError, StorageFull, StorageMisconfigured,
                                  StoragePermissionDenied, StorageUnavailable)

SETTING = "APPSVC_DR_STORE__LOCAL_PATH"
NOT_FOUND = (errno.ENOENT, errno.ENOTDIR, errno.EISDIR)
PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700


def classify_os_error(exc: OSError, *, where: str, what: str, setting: str = SETTING) -> StorageError:
    """Map an OSError from the store's side (never from the caller's stream) to a storage error."""
    code = exc.errno
    reason = os.strerror(code) if code else (exc.strerror or type(exc).__name__)
    message = f"{where}: cannot {what}: {reason}"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoragePermissionDenied(message, hint=(
            f"Give the worker's user (uid {os.geteuid()}) read/write access to the store directory, or point "
            f"{setting} at a writable location (a read-only mount also ends up here)."))
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return StorageFull(message, hint=(
            f"The volume behind {setting} is full or over quota: free space or grow it, then "
            "`appsvc-dr dlq replay <worker>`."))
    if code in (errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG):
        return InvalidArgument(message + " (the key collides with an existing object or directory)")
    if code == errno.ENOENT:
        return StorageMisconfigured(message, hint=(
            f"The store directory (or part of it) disappeared while in use: check {setting} and the mount."))
    return StorageUnavailable(message)   # EIO, ESTALE, ETIMEDOUT, ...: network mounts recover



def make_private_dirs(directory: Path | str) -> None:
    """Create ``directory`` and its missing parents 0700 (explicitly, whatever the umask); directories that
    already exist are left as they are."""
    missing: list[Path] = []
    path = Path(directory).absolute()
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            continue                                  # created meanwhile by someone else: theirs to mode
        os.chmod(path, PRIVATE_DIR)


def utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)


def fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass                                          # some file systems cannot fsync a directory
    finally:
        os.close(fd)
