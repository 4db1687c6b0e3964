"""Staged files and drop locations named by events: an absolute local path or a UNC path on an SMB share,
accepted only strictly inside a configured root.

Events are not trusted (DESIGN §6). Before any I/O a path is normalised (``.``/``..``, separators and, for UNC
paths, case) and must lie under one of the roots its caller passes. A local path is resolved through symlinks
(``os.path.realpath``) first, so a link inside a root that points out of it is refused. A UNC path is accepted
only on the host and share of a configured UNC root; any other host is refused before a connection is made
(connecting would send the staging NTLM credentials to it), and the connection goes to the root's own host
and share spelling. Each accepted path is opened as a :class:`Staged` (backend, key) with the backend rooted at
the root, so reading, stat and delete go through the same classified storage code; :func:`locate` is a context
manager that closes that backend (its SMB connection) when the block ends.
"""
from __future__ import annotations

import contextlib
import ntpath
import os
import posixpath
import re
from dataclasses import dataclass
from typing import Iterator, NamedTuple, Pattern, Sequence

from workers.runtime.errors import PermanentError
from workers.smb.status import SettingNames
from workers.storage.base import StorageBackend
from workers.storage.settings import StagingSettings

DATABASE_DIR_SETTING = "APPSVC_DR_STAGING__DATABASE_DIR"
SMB_SETTING = "APPSVC_DR_STAGING__SMB_"
ROOTS_SETTING = "APPSVC_DR_STAGING__ROOTS"
_SEPARATORS = re.compile(r"[\\/]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BAD_UNC_PART = re.compile(r'[<>:"|?*]')


@dataclass(frozen=True)
class Root:
    """A configured directory (local, or ``\\\\host\\share[\\dir]``) that events may name files under, and
    the setting that configures it (for the hint of a refusal)."""

    path: str
    setting: str


class Staged(NamedTuple):
    """A located file: the backend rooted at its configured root, and the file's key in it."""

    backend: StorageBackend
    key: str


class PathRefused(PermanentError):
    """An event named a path outside every configured root (or a malformed one): nothing was read or touched."""


def staging_roots(staging: StagingSettings) -> list[Root]:
    """Where producers may stage files for the upload worker: the database staging directory and any extra
    configured staging roots."""
    return [Root(staging.database_dir, DATABASE_DIR_SETTING), *(Root(r, ROOTS_SETTING) for r in staging.roots)]


def is_unc(path: str) -> bool:
    """Whether ``path`` is meant as an SMB location (two leading separators); :func:`locate` validates it."""
    return len(path) > 1 and path[0] in "\\/" and path[1] in "\\/"


def join(directory: str, name: str) -> str:
    """``name`` inside ``directory``, with the separator of a UNC or a local path."""
    return (ntpath.join if is_unc(directory) else posixpath.join)(directory, name)


@contextlib.contextmanager
def locate(path: str, staging: StagingSettings, roots: Sequence[Root], *, what: str = "staged path",
           name_pattern: Pattern[str] | None = None) -> Iterator[Staged]:
    """The backend holding ``path`` and the file's key in it, if ``path`` lies strictly inside one of
    ``roots`` (and its file name matches ``name_pattern``); otherwise :class:`PathRefused`, before any I/O.
    The backend is closed (an SMB connection logged off) when the ``with`` block ends."""
    staged = _locate(path, staging, roots, what=what, name_pattern=name_pattern)
    try:
        yield staged
    finally:
        staged.backend.close()


def _locate(path: str, staging: StagingSettings, roots: Sequence[Root], *, what: str,
            name_pattern: Pattern[str] | None) -> Staged:
    shown = repr(path[:300])
    settings = " or ".join(sorted({r.setting for r in roots})) or "the setting of its root"
    configured = [r for r in roots if r.path]
    if not configured:
        raise PathRefused(f"{what} {shown} refused: no location is configured for it",
                          hint=f"Set {settings} to the directory producers write to.")
    if _CONTROL.search(path):
        raise PathRefused(f"{what} {shown} refused: it holds control characters",
                          hint=f"Fix the producer: paths are plain absolute or UNC paths under {settings}.")
    if is_unc(path):
        found = _inside_unc(path, configured, staging)
    elif path.startswith("/"):
        found = _inside_local(path, configured)
    else:
        raise PathRefused(f"{what} {shown} refused: it is neither an absolute local path nor a UNC path",
                          hint=r"Producers must send an absolute local path or \\server\share\path under "
                               f"{settings}.")
    if found is None:
        raise PathRefused(f"{what} {shown} refused: it is not inside {settings} "
                          f"({', '.join(repr(r.path) for r in configured)})",
                          hint=f"Only files under {settings} are read or deleted: fix the producer, or add its "
                               f"location to {settings} if it is genuine. Nothing was read, written or deleted.")
    if name_pattern is not None and not name_pattern.fullmatch(found.key.rpartition("/")[2]):
        raise PathRefused(f"{what} {shown} refused: the file name does not match {name_pattern.pattern!r}",
                          hint="Producers drop files under the names this worker expects; fix the producer.")
    return found                                # nothing connected yet: the backends connect lazily


def _inside_local(path: str, roots: Sequence[Root]) -> Staged | None:
    if "\\" in path:
        return None                          # a Windows separator in a local path: never a genuine staging path
    real = os.path.realpath(path)
    for root in roots:
        if is_unc(root.path):
            continue
        real_root = os.path.realpath(root.path)
        if real != real_root and os.path.commonpath([real, real_root]) == real_root:
            from workers.storage.local import LocalStore
            key = os.path.relpath(real, real_root).replace(os.sep, "/")
            return Staged(LocalStore(real_root, create=False, private=True), key)
    return None


def _unc_parts(path: str) -> list[str] | None:
    """``[host, share, dir..., name]`` with ``.``/``..`` resolved, or None when malformed or climbing above
    the share."""
    host, share, *rest = [p for p in _SEPARATORS.split(path) if p] + ["", ""]
    rest = [p for p in rest if p]
    parts: list[str] = []
    for part in rest:
        if part == ".":
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
            continue
        if _BAD_UNC_PART.search(part) or part != part.rstrip(" ."):
            return None                      # stream names, wildcards, Windows-stripped trailing dots/spaces
        parts.append(part)
    names = (host, share)
    if any(not n or n in (".", "..") or _BAD_UNC_PART.search(n) for n in names):
        return None
    return [host, share, *parts]


def _inside_unc(path: str, roots: Sequence[Root], staging: StagingSettings) -> Staged | None:
    parts = _unc_parts(path)
    if parts is None:
        return None
    folded = [p.casefold() for p in parts]
    for root in roots:
        root_parts = _unc_parts(root.path) if is_unc(root.path) else None
        if root_parts is None:
            continue
        if len(folded) > len(root_parts) and folded[:len(root_parts)] == [p.casefold() for p in root_parts]:
            from workers.storage.smb import SmbStore    # connects to the root's host and share, never the event's
            store = SmbStore("\\\\" + "\\".join(root_parts), staging.smb_username, staging.smb_password,
                             port=staging.smb_port, encrypt=staging.smb_encrypt, settings=_smb_settings(root))
            return Staged(store, "/".join(parts[len(root_parts):]))
    return None


def _smb_settings(root: Root) -> SettingNames:
    """The settings a hint names for an SMB failure under ``root``: the root's own setting and the staging
    credentials (not the artifact store's)."""
    return SettingNames(root.setting, f"{SMB_SETTING}USERNAME", f"{SMB_SETTING}PASSWORD", f"{SMB_SETTING}PORT",
                        f"{SMB_SETTING}ENCRYPT")
