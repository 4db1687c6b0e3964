"""What a path inside a snapshot may look like, checked where a manifest enters (``Manifest.from_json``) and again
by every restore target before it touches anything: a manifest read from the store is untrusted (anyone who can
write to the store can build one with the public certificate), so no entry may name anything outside the tree it
is restored into.

A path is relative and '/'-separated; no component is empty, ``.`` or ``..``; no ``\\``, ``:`` (drive letters,
alternate data streams), NUL or control characters, nor lone surrogates; a component is at most 255 UTF-16 code
units and a path at most 32,767 (the Windows / SMB limits), so what restores onto a local disk restores onto a
share too.
"""
from __future__ import annotations

import hashlib
import re

from workers.runtime.errors import PermanentError

MAX_COMPONENT, MAX_PATH = 255, 32_767
PARTIAL = ".appsvc-dr-partial"                      # suffix of a file being restored, before it is verified
REPARSE_POINT = 0x400                                 # FILE_ATTRIBUTE_REPARSE_POINT (a symlink on a local target)
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\:]")
_NAMED = {"\\": "a backslash ('\\')", ":": "a colon (drive letter or stream name)", "\x00": "a NUL character"}
TAMPERED = ("The snapshot was not written by appsvc-dr, or the store was tampered with: restore another snapshot "
            "(`appsvc-dr snapshots list`) and check who can write to the store.")


class UnsafeEntryError(PermanentError):
    """A manifest entry that could make a restore write outside its target (or is not a well-formed entry)."""

    default_hint = TAMPERED

    def __init__(self, entry: object, rule: str, *, where: str = "") -> None:
        self.entry, self.rule = shown(entry), rule
        super().__init__(f"{where}manifest entry {self.entry} refused: {rule}")


class UnsafeTargetError(PermanentError):
    """Something in the restore target the restore will not follow or replace (a symlink, a reparse point, a
    device, a directory where a file goes)."""

    default_hint = ("Nothing was written through it. Remove or rename it in the target (it may point outside the "
                    "target), or restore into an empty directory with --target.")


def shown(value: object, limit: int = 200) -> str:
    """``value`` as it may appear in a message: repr-escaped (no control characters reach a terminal), cut short."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(value)} characters)" if isinstance(value, str) else f"{text[:limit]}..."


def printable(text: str) -> str:
    """``text`` unchanged if it is printable, else repr-escaped (a name from the store reaching a terminal)."""
    return text if text.isprintable() else shown(text)


def _units(text: str) -> int:
    """Length in UTF-16 code units (what Windows and SMB count)."""
    return len(text) if text.isascii() else len(text.encode("utf-16-le", "surrogatepass")) // 2


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be one component of a path, or None."""
    if name in ("", ".", ".."):
        return "an empty component" if not name else f"a {name!r} component"
    bad = _FORBIDDEN.search(name)
    if bad:
        char = bad.group()
        return f"{_NAMED.get(char, f'a control character ({char!r})')} in {shown(name, 80)}"
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:                    # a lone surrogate: no file system or SMB name holds it
            return f"invalid Unicode (a lone surrogate) in {shown(name, 80)}"
    if _units(name) > MAX_COMPONENT:
        return f"a component longer than {MAX_COMPONENT} characters"
    return None


def path_problem(path: object) -> str | None:
    """Why ``path`` is not a safe relative path inside a tree, or None."""
    if not isinstance(path, str):
        return f"a path must be a string, not {type(path).__name__}"
    if not path:
        return "an empty path"
    if path.startswith("/"):
        return "an absolute path (leading '/')"
    if _units(path) > MAX_PATH:
        return f"a path longer than {MAX_PATH} characters"
    for name in path.split("/"):
        problem = name_problem(name)
        if problem:
            return problem
    return None


def check_path(path: object, *, where: str = "") -> str:
    """``path`` if it is a safe relative path, else :class:`UnsafeEntryError`."""
    problem = path_problem(path)
    if problem:
        raise UnsafeEntryError(path, problem, where=where)
    return path                                       # type: ignore[return-value]


def parts(rel: str) -> list[str]:
    """The components of a tree path (``""`` is the root: no components), checked."""
    return check_path(rel).split("/") if rel else []


def partial_name(name: str) -> str:
    """The temporary name ``name`` is restored under, beside it (hidden; shortened to fit a 255 limit)."""
    tmp = f".{name}{PARTIAL}"
    if _units(tmp) <= MAX_COMPONENT and len(tmp.encode()) <= MAX_COMPONENT:
        return tmp
    return f".{hashlib.sha256(name.encode()).hexdigest()[:32]}{PARTIAL}"
