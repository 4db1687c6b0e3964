"""The writer process's side of a restore to an SMB share (:mod:`.restoreprocs` starts and feeds it): a
``spawn``-started process with its own SMB session that writes one file at a time through ``Tree.open_write``
from the frames on its data socket (an 8-byte length, then that many bytes; an empty frame ends the file), then
``COMMIT`` or ``ABORT`` on its control pipe, and answers exactly one :class:`Outcome` - ``ok``, ``aborted``, or
``failed`` with what the restoring process raises (the same ``FileProblem``, ``UnsafeTargetError`` or DrError
kind). A failure is reported at once and what is still sent for that file is read and dropped.
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any, Iterator

from workers.fileshare.budget import message_buffers_reused
from workers.fileshare.opener import tree_from_spec
from workers.fileshare.tree import FileProblem, SourceUnavailable, Tree
from workers.repository.paths import UnsafeEntryError, UnsafeTargetError
from workers.runtime.errors import DrError, PermanentError, TransientError, is_permanent

COMMIT, ABORT = "commit", "abort"
FRAME = struct.Struct("<Q")
SOCKET_BUFFER = 4 << 20                     # fewer, larger hand-offs between the processes


def _frames(data: socket.socket) -> Iterator[bytearray]:
    """The frames of one file from ``data``, up to its empty frame."""
    head = bytearray(FRAME.size)
    while True:
        _fill(data, memoryview(head))
        size = FRAME.unpack(head)[0]
        if not size:
            return
        buf = bytearray(size)
        _fill(data, memoryview(buf))
        yield buf


def _fill(data: socket.socket, view: memoryview) -> None:
    while len(view):
        got = data.recv_into(view)
        if not got:
            raise EOFError("the restoring process closed the data socket")
        view = view[got:]


@dataclass(frozen=True, slots=True)
class Outcome:
    """A writer's answer: ``ok``, ``aborted``, or ``failed`` with what to raise here."""

    status: str
    kind: str = ""                          # failed: a FileProblem's kind, or the DrError class rebuilt here
    message: str = ""
    hint: str = ""

    @classmethod
    def of(cls, exc: BaseException) -> "Outcome":
        if isinstance(exc, FileProblem):
            return cls("failed", "file:" + exc.kind, exc.message)
        if isinstance(exc, (UnsafeTargetError, UnsafeEntryError)):
            return cls("failed", "unsafe", exc.message, exc.hint)
        if isinstance(exc, DrError):
            kind = "unavailable" if isinstance(exc, SourceUnavailable) else \
                "permanent" if is_permanent(exc) else "transient"
            return cls("failed", kind, exc.message, exc.hint)
        return cls("failed", "transient", f"the restore's writer process failed: {type(exc).__name__}: {exc}")

    def error(self) -> BaseException:
        if self.kind.startswith("file:"):
            return FileProblem(self.kind[5:], self.message)
        hint = self.hint or None
        return UnsafeTargetError(self.message, hint=hint) if self.kind == "unsafe" else \
            SourceUnavailable(self.message, hint=hint) if self.kind == "unavailable" else \
            PermanentError(self.message, hint=hint) if self.kind == "permanent" else \
            TransientError(self.message, hint=hint)


class _Abandoned(Exception):
    """The restoring process said ``abort``: the temporary file goes."""


def writer_main(spec: dict, conn: Any, data: socket.socket) -> None:
    """Entry point of a writer process (spawned): its own SMB session, one file at a time."""
    message_buffers_reused()
    data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    try:
        tree = tree_from_spec(dict(spec))
        tree.connect()
    except BaseException as exc:  # noqa: BLE001 - reported; the restore goes on without this writer
        conn.send(Outcome.of(exc))
        return
    conn.send(Outcome("ready"))
    try:
        while True:
            try:
                rel = conn.recv()
            except EOFError:
                return
            if rel is None:
                return
            outcome = _write(tree, rel, conn, data)
            if outcome is not None:
                conn.send(outcome)
    except (EOFError, OSError):
        return                                  # the restoring process is gone: so is the point of going on
    finally:
        tree.close()


def _write(tree: Tree, rel: str, conn: Any, data: socket.socket) -> Outcome | None:
    """Write one file from ``data``; the outcome to send (None: a failure, already sent)."""
    ended = False
    try:
        with tree.open_write(rel) as fh:
            for frame in _frames(data):
                fh.write(frame)
            ended = True
            if conn.recv() != COMMIT:
                raise _Abandoned
    except _Abandoned:
        return Outcome("aborted")
    except Exception as exc:  # noqa: BLE001 - the temporary file is gone (open_write); say why at once
        if isinstance(exc, (EOFError, BrokenPipeError)):
            raise
        conn.send(Outcome.of(exc))
        if not ended:                           # what is still sent for this file: read and dropped
            for _ in _frames(data):
                pass
            conn.recv()
        return None
    return Outcome("ok")
