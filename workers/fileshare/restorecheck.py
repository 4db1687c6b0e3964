"""The restore's two checks of what the target holds: whether a file already there is the snapshot's (so it is left
alone), and, once everything is written, the target listed again and compared with every entry the restore claims
(type, size, mtime, attributes)."""
from __future__ import annotations

import hashlib
from typing import Any, BinaryIO, Callable

from workers.artifacts.service import sha256_of
from workers.fileshare.restoreplan import Step
from workers.fileshare.restorereport import HINTS, Failure
from workers.fileshare.tree import ATTRIBUTES, FileProblem, Tree
from workers.repository.manifest import Entry


def same_file(fh: BinaryIO, entry: Entry, length: Callable[[str], int]) -> bool:
    """Whether ``fh`` holds ``entry``'s content: its SHA-256 when the manifest has it, else blob by blob."""
    if entry.sha256:
        return sha256_of(fh)[0] == entry.sha256
    for blob in entry.blobs:
        want, digest = length(blob), hashlib.sha256()
        while want and (data := fh.read(min(want, 1 << 20))):
            digest.update(data)
            want -= len(data)
        if want or digest.hexdigest() != blob:
            return False
    return not fh.read(1)


def already_there(target: Tree, step: Step, length: Callable[[str], int]) -> bool:
    """Whether the file where a ``check`` step goes (same size and mtime) already holds its entry's content; a file
    that cannot be read is not."""
    if step.action != "check":
        return False
    try:
        with target.open_read(step.target) as fh:
            return same_file(fh, step.entry, length)
    except FileProblem:
        return False


def listed_again(target: Tree, steps: list[Step], failed: set[str], attributes: bool) -> list[Failure]:
    """List ``target`` again and compare each of ``steps`` (but those ``failed`` already) with what it holds: type,
    size, mtime, and the DOS attributes when ``attributes``. A failure for each that differs."""
    listings: dict[str, dict[str, Any]] = {}
    found: list[Failure] = []
    for step in steps:
        if step.entry.path in failed:
            continue
        parent, _, name = step.target.rpartition("/")
        if parent not in listings:
            try:
                listings[parent] = {s.name: s for s in target.listdir(parent)}
            except FileProblem:
                listings[parent] = {}
        st = listings[parent].get(name)
        e = step.entry
        problem = "it is missing" if st is None else "it is not a directory" if e.is_dir and not st.is_dir else \
            "it is not a file" if not e.is_dir and st.is_dir else \
            f"its size is {st.size}, not {e.size}" if not e.is_dir and st.size != e.size else \
            "its mtime differs" if st.mtime_ns // 100 != e.mtime_ns // 100 else \
            f"its attributes are 0x{st.attrs & ATTRIBUTES:x}, not 0x{e.attrs & ATTRIBUTES:x}" \
            if attributes and (st.attrs & ATTRIBUTES) != (e.attrs & ATTRIBUTES) else None
        if problem:
            found.append(Failure(e.path, f"verification after restoring: {problem}", HINTS["verify"]))
    return found
