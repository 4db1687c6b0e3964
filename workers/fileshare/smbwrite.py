"""Several WRITEs in flight on one open file: a restored large file is sent in WRITEs of ``size`` bytes, up to
``depth`` of them outstanding at once, through smbprotocol's public out-of-band API (``Open.write(send=False)``
returns the request and its receive function, ``Connection.send`` sends it). One synchronous WRITE at a time (what
``smbclient``'s file objects do) leaves the connection idle while the server decrypts and writes each message.

Every WRITE's response is awaited before :meth:`PipelinedWriter.flush` returns and each must acknowledge its whole
length: a failed write raises smbprotocol's ``SMBResponseException`` (classified by the tree), a short one a
:class:`~workers.fileshare.tree.FileProblem`.
"""
from __future__ import annotations

import collections
from typing import Any, Callable

from workers.fileshare.tree import FileProblem

PAYLOAD = 65536                 # bytes one credit pays for (MS-SMB2 3.1.5.2)


class PipelinedWriter:
    """Write-only file object over an smbprotocol ``Open``: ``write`` gathers the caller's buffers (no copy until a
    WRITE's worth is there), ``flush`` sends the rest and waits for every response."""

    def __init__(self, fd: Any, *, size: int, depth: int) -> None:
        self._fd, self._size, self._depth = fd, min(size, fd.connection.max_write_size), max(1, depth)
        self._parts: list[memoryview] = []
        self._held = 0                                        # bytes gathered in _parts
        self._offset = 0                                      # file offset of the next WRITE
        self._pending: collections.deque[tuple[Any, Callable[[Any], int], int]] = collections.deque()

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        while len(view):
            take = min(len(view), self._size - self._held)
            self._parts.append(view[:take])
            self._held += take
            view = view[take:]
            if self._held == self._size:
                self._send()
        return n

    def write_at(self, offset: int, data) -> int:
        """Write ``data`` at ``offset`` (a restore streamed pack by pack writes a file's blobs where they go, in
        any order): joined with the gathered bytes when it continues them, else those are sent first."""
        if self._held and self._offset + self._held != offset:
            self._send()
        if not self._held:
            self._offset = offset
        return self.write(data)

    def flush(self) -> None:
        if self._held:
            self._send()
        while self._pending:
            self._collect()

    def abandon(self) -> None:
        """After a failure: wait for the WRITEs still in flight, whatever they answer (the file is removed)."""
        self._parts, self._held = [], 0
        while self._pending:
            request, receive, _ = self._pending.popleft()
            try:
                receive(request)
            except Exception:                                 # noqa: BLE001 - the first error is what is reported
                pass

    def _send(self) -> None:
        data = b"".join(self._parts)
        self._parts, self._held = [], 0
        connection = self._fd.connection
        charge = (len(data) - 1) // PAYLOAD + 1
        while self._pending and (len(self._pending) >= self._depth or
                                 connection.sequence_window["high"] - connection.sequence_window["low"] < charge):
            self._collect()                                   # room for one more (its responses grant credits)
        message, receive = self._fd.write(data, offset=self._offset, send=False)
        request = connection.send(message, sid=self._fd.tree_connect.session.session_id,
                                  tid=self._fd.tree_connect.tree_connect_id, credit_request=charge)
        self._pending.append((request, receive, len(data)))
        self._offset += len(data)

    def _collect(self) -> None:
        request, receive, length = self._pending.popleft()
        written = receive(request)
        if written != length:
            raise FileProblem("changed", f"the server wrote {written} of the {length} bytes sent at once")
