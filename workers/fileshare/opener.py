"""Opening a file-share tree by its source string: a UNC path opens an SMB tree, an absolute path a local one.

It lives apart from ``tree`` (the Tree protocol), ``localtree`` (LocalTree) and ``smbtree`` (SmbTree), which build
on ``tree``, so that none of them imports another in a circle."""
from __future__ import annotations

import os

from workers.fileshare.localtree import LocalTree
from workers.fileshare.tree import SourceMisconfigured, Tree
from workers.smb.unc import split_unc


def open_tree(source: str, *, username: str | None = None, password=None, port: int = 445,
              encrypt: bool = True, create: bool = False) -> Tree:
    """The tree behind ``source``: ``\\\\server\\share[\\dir]`` or an absolute local path (created on
    ``connect`` if missing when ``create``: a restore target)."""
    parts = split_unc(source)
    if parts is not None:
        from workers.fileshare.smbtree import SmbTree
        return SmbTree(source, username=username, password=password, port=port, encrypt=encrypt, create=create)
    if source and os.path.isabs(source):
        return LocalTree(source, create=create)
    raise SourceMisconfigured(f"file-share source {source!r} is neither a UNC path nor an absolute local path")


def tree_from_spec(spec: dict) -> Tree:
    kind = spec.pop("kind")
    return open_tree(**spec) if kind == "smb" else LocalTree(spec["root"])
