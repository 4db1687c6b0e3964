"""Temporary files left by a restore's process that ended before it could remove them (a writer process of
``restoreprocs``, a group process of ``restoregroups``): the restoring process removes them."""
from __future__ import annotations

import logging
import time

from workers.fileshare.tree import FileProblem, Tree
from workers.repository.paths import parts, partial_name

log = logging.getLogger("appsvc_dr.fileshare")
PARTIAL_GRACE = 15.0                        # how long an ended process's handle may keep its file (SMB)


def partial_of(rel: str) -> str:
    """The temporary name ``open_write`` writes ``rel`` under."""
    names = parts(rel)
    return "/".join([*names[:-1], partial_name(names[-1])])


def remove_partial(tree: Tree, partial: str) -> None:
    """Remove a temporary file that a process which ended could not remove itself; a sharing violation (its
    handle not closed yet by the server) is retried for PARTIAL_GRACE seconds."""
    deadline = time.monotonic() + PARTIAL_GRACE
    while True:
        try:
            tree.remove(partial)
            return
        except FileProblem as problem:
            if problem.kind != "locked" or time.monotonic() > deadline:
                if problem.kind != "vanished":
                    log.warning("could not remove %s after its process ended: %s", partial, problem)
                return
        except Exception as exc:  # noqa: BLE001 - the restore goes on; the next run replaces the file
            log.warning("could not remove %s after its process ended: %s", partial, exc)
            return
        time.sleep(0.1)

