"""Renaming an open file on its own handle: one SET_INFO FileRenameInformation request.

``smbclient.replace`` would first open the destination for FILE_EXECUTE, which Samba refuses on a file without
the x bit; renaming the handle we hold also never follows a reparse point at the destination's path."""
from __future__ import annotations

import ntpath
from typing import Any

from smbprotocol.file_info import FileRenameInformation
from smbprotocol.open import SMB2SetInfoRequest


def rename_info(fd: Any, name: str, *, replace: bool = True) -> FileRenameInformation:
    """The FileRenameInformation that renames the open file ``fd`` (an smbprotocol ``Open``) to ``name`` in its
    own directory, replacing a file there when ``replace``. On a DFS share the handle's name starts with the share
    path, which the new name must not."""
    rel, tree = fd.file_name, fd.tree_connect
    if tree.is_dfs_share and rel.startswith(tree.share_name[2:]):
        rel = rel[len(tree.share_name) - 1:]
    info = FileRenameInformation()
    info["replace_if_exists"] = replace
    info["file_name"] = ntpath.join(ntpath.dirname(rel), name)
    return info


def rename(fd: Any, name: str, *, replace: bool = True) -> None:
    """Rename the open file ``fd`` to ``name`` in its directory (see :func:`rename_info`), on its handle."""
    info = rename_info(fd, name, replace=replace)
    request = SMB2SetInfoRequest()
    request["info_type"], request["file_info_class"] = info.INFO_TYPE, info.INFO_CLASS
    request["file_id"], request["buffer"] = fd.file_id, info
    fd.connection.receive(fd.connection.send(request, fd.tree_connect.session.session_id,
                                             fd.tree_connect.tree_connect_id))
