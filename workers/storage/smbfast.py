"""A leaner receive path under smbprotocol's :class:`~smbprotocol.connection.Connection`, for bulk reads.

smbprotocol receives each message into a zeroed ``bytearray``, ``recv``s into fresh ``bytes`` and copies those
in, copies the whole into ``bytes`` again, then, for an encrypted message, parses the transform header (one
more copy of the body), concatenates body and tag (another), re-packs the header with its body to take the
32 bytes of associated data (another) and decrypts: about seven passes over every byte read, in Python that
holds the GIL. :class:`FastConnection` is a ``Connection`` whose transport (:class:`FastTcp`) receives each
message with ``recv_into`` a buffer it reuses and, for an encrypted one, decrypts straight from that buffer:
the connection's own message thread then gets the plaintext message, exactly as it would after its own
decryption (the AEAD tag authenticated it, so, as smbprotocol does after decrypting, its signature is not
checked again). Messages it cannot decrypt itself (no session yet, unexpected flags) are handed on whole for
smbprotocol to handle (and report) as before. Sending takes one ``sendmsg`` of length prefix and message;
an encrypted one is sealed without the two extra copies of its body that smbprotocol's ``_encrypt`` makes.

Used through ``smbclient``'s ``connection_cache``: :func:`seed` puts a connected ``FastConnection`` in a
cache before ``register_session`` looks there; if smbprotocol ever lacks what this relies on, :func:`seed`
does nothing and smbprotocol's own connection is used.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import struct
import threading
import time
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM
from smbclient import ClientConfig
from smbprotocol.connection import Ciphers, Connection, Dialects
from smbprotocol.transport import Tcp

log = logging.getLogger("appsvc_dr.smb")
TRANSFORM = b"\xfdSMB"
_LENGTH = struct.Struct(">L")
_FLAGS_SESSION = struct.Struct("<HQ")       # transform header: Flags at 42, SessionId at 44; AAD is bytes 20..52
_SIZE_FLAGS_SESSION = struct.Struct("<IHHQ")  # OriginalMessageSize at 36, Reserved, Flags, SessionId
_TRANSFORM_SIZE, _TAG = 52, 16
_GONE = (errno.ESHUTDOWN, errno.ECONNRESET, errno.ECONNABORTED)


class Encrypted:
    """An encrypted message to send: its 52-byte transform header and the ciphertext (not joined)."""

    __slots__ = ("head", "body")

    def __init__(self, head: bytearray, body: memoryview) -> None:
        self.head, self.body = head, body


class FastTcp(Tcp):
    """smbprotocol's Direct TCP transport with a copy-free receive and an optional decrypting hook."""

    def __init__(self, server: str, port: int, timeout: float | None = None, decrypt: Any = None) -> None:
        super().__init__(server, port, timeout)
        self._buf = bytearray(1 << 16)
        self._head = bytearray(4)
        self._decrypt = decrypt
        self.decrypted = False              # the message just returned was decrypted here (message thread only)
        self.decrypted_count = 0

    def send(self, header: Any) -> None:
        if isinstance(header, Encrypted):
            parts = [memoryview(header.head), header.body]
        elif isinstance(header, (bytes, bytearray, memoryview)):
            parts = [memoryview(header)]
        else:
            parts = [memoryview(header.pack())]     # a structure (smbprotocol's own transform header)
        size = sum(len(p) for p in parts)
        if size > self.MAX_SIZE:
            raise ValueError(f"Data to be sent over Direct TCP size {size} exceeds the max length allowed "
                             f"{self.MAX_SIZE}")
        pieces = [memoryview(_LENGTH.pack(size)), *parts]
        with self._sock_lock:
            while pieces:
                sent = self._sock.sendmsg(pieces)
                while sent:
                    if sent >= len(pieces[0]):
                        sent -= len(pieces.pop(0))
                    else:
                        pieces[0], sent = pieces[0][sent:], 0

    def recv(self, timeout: float) -> bytes:
        self.decrypted = False
        timeout = self._fill(self._head, 4, timeout)
        if timeout is None:
            return b""
        length = _LENGTH.unpack(self._head)[0]
        if length + _TAG > len(self._buf):          # room for the tag after the body (see FastConnection)
            self._buf = bytearray(max(length + _TAG, 2 * len(self._buf)))
        if self._fill(self._buf, length, timeout) is None:
            return b""
        if self._decrypt is not None and length > _TRANSFORM_SIZE and self._buf[:4] == TRANSFORM:
            plain = self._decrypt(self._buf, length)
            if plain is not None:
                self.decrypted = True
                self.decrypted_count += 1
                return plain
        return bytes(memoryview(self._buf)[:length])

    def _fill(self, buf: bytearray, length: int, timeout: float) -> float | None:
        """Receive exactly ``length`` bytes into ``buf``; the time left, or None once the socket is closed."""
        offset = 0
        with memoryview(buf) as view:
            while offset < length:
                started = time.monotonic()
                with self._close_lock:
                    if not self.connected:
                        return None
                    if not select.select([self._sock], [], [], max(timeout, 1))[0]:
                        elapsed = time.monotonic() - started
                        raise TimeoutError(f"recv idle for {elapsed:.1f}s ({offset}/{length} bytes)")
                    timeout -= time.monotonic() - started
                    try:
                        got = self._sock.recv_into(view[offset:length])
                    except OSError as exc:
                        if exc.errno not in _GONE:
                            raise
                        log.warning("socket aborted by peer (%s), treating as EOF", errno.errorcode.get(exc.errno))
                        got = 0
                if not got:
                    self.close()
                    return None
                offset += got
        return timeout


class FastConnection(Connection):
    """A Connection whose transport is :class:`FastTcp`, decrypting with this connection's session keys."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._aeads: dict[bytes, tuple[Any, int]] = {}     # session key -> (AEAD, nonce size)

    @property
    def transport(self) -> Any:
        return self.__dict__.get("_transport")

    @transport.setter
    def transport(self, value: Any) -> None:
        if type(value) is Tcp:                      # Connection.connect makes one: use ours instead
            value = FastTcp(value.server, value.port, value.timeout, self._decrypt_buffer)
        self.__dict__["_transport"] = value

    def _aead(self, key: bytes) -> tuple[Any, int]:
        """The cipher for a session key and its nonce size: AES-GCM when SMB 3.1.1 negotiated it, else AES-CCM
        (as smbprotocol's own ``_encrypt`` / ``_decrypt`` choose)."""
        cached = self._aeads.get(key)
        if cached is None:
            gcm = self.dialect >= Dialects.SMB_3_1_1 and self.cipher_id in (Ciphers.AES_128_GCM, Ciphers.AES_256_GCM)
            cached = self._aeads[key] = (AESGCM(key), 12) if gcm else (AESCCM(key), 11)
        return cached

    def _decrypt_buffer(self, buf: bytearray, length: int) -> bytes | None:
        flags, session_id = _FLAGS_SESSION.unpack_from(buf, 42)
        session = self.session_table.get(session_id)
        key = getattr(session, "decryption_key", None)
        if flags != 0x0001 or not key:
            return None                             # smbprotocol's own path reports it
        aead, nonce_size = self._aead(key)
        buf[length:length + _TAG] = buf[4:4 + _TAG]      # ciphertext || tag, as the AEAD API wants it
        with memoryview(buf) as view:
            return aead.decrypt(view[20:20 + nonce_size], view[_TRANSFORM_SIZE:length + _TAG], view[20:52])

    def _encrypt(self, b_data: bytes, session: Any) -> Encrypted:
        """smbprotocol's ``_encrypt`` without re-slicing and re-packing the ciphertext (two copies of what is
        written): the transform header is built in place and sent beside the ciphertext."""
        aead, nonce_size = self._aead(session.encryption_key)
        nonce = os.urandom(nonce_size)
        head = bytearray(_TRANSFORM_SIZE)
        head[:4], head[20:20 + nonce_size] = TRANSFORM, nonce
        _SIZE_FLAGS_SESSION.pack_into(head, 36, len(b_data), 0, 0x0001, session.session_id)
        sealed = aead.encrypt(nonce, b_data, bytes(head[20:]))
        head[4:4 + _TAG] = sealed[-_TAG:]
        return Encrypted(head, memoryview(sealed)[:-_TAG])

    def verify_signature(self, header: Any, session_id: int, force: bool = False) -> None:
        transport = self.transport
        if not force and transport is not None and transport.decrypted and \
                threading.current_thread() is self._t_worker:
            return                                  # authenticated by the AEAD tag, as smbprotocol's own decrypt
        super().verify_signature(header, session_id, force=force)


def seed(cache: dict, server: str, port: int, *, timeout: float, require_signing: bool = True) -> None:
    """Put a connected :class:`FastConnection` to ``server:port`` in ``cache`` (an ``smbclient``
    ``connection_cache``) unless a live connection is there already. Connection errors propagate, as they
    would from ``register_session``."""
    key = f"{server.lower()}:{port}"
    current = cache.get(key)
    if current is not None and current.transport is not None and current.transport.connected:
        return
    if not _supported():
        return
    connection = FastConnection(ClientConfig().client_guid, server, port, require_signing=require_signing)
    connection.connect(timeout=timeout)
    cache[key] = connection


def _supported() -> bool:
    """What FastTcp and FastConnection rely on in smbprotocol's internals is there."""
    probe = Tcp("localhost", 445)
    return all(hasattr(probe, name) for name in ("_sock_lock", "_close_lock", "connected", "MAX_SIZE")) and \
        all(hasattr(Connection, name) for name in ("_process_message_thread", "verify_signature", "connect"))
