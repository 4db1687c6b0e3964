"""FastConnection's decryption against smbprotocol's own, on messages smbprotocol itself encrypts."""
from __future__ import annotations

import os
import socket
import threading
import uuid

import pytest
from cryptography.exceptions import InvalidTag
from smbprotocol.connection import Ciphers, Connection, Dialects, SMB2TransformHeader

from workers.storage.smbfast import FastConnection, FastTcp


class _Session:
    def __init__(self, session_id: int, key: bytes) -> None:
        self.session_id, self.encryption_key, self.decryption_key = session_id, key, key


def _connection(dialect: int, cipher: int | None, key: bytes, session_id: int = 0x1122) -> FastConnection:
    conn = FastConnection(uuid.uuid4(), "localhost", 445)
    conn.dialect, conn.cipher_id = dialect, cipher
    conn.session_table[session_id] = _Session(session_id, key)
    return conn


def _wire(conn: Connection, plain: bytes, session_id: int = 0x1122) -> bytearray:
    """An encrypted message as it arrives, in a receive buffer with room for the tag (as FastTcp keeps it)."""
    raw = Connection._encrypt(conn, plain, conn.session_table[session_id]).pack()
    return bytearray(raw) + bytearray(16)


CASES = [(Dialects.SMB_3_1_1, Ciphers.AES_128_GCM, 16), (Dialects.SMB_3_1_1, Ciphers.AES_256_GCM, 32),
         (Dialects.SMB_3_1_1, Ciphers.AES_128_CCM, 16), (Dialects.SMB_3_0_2, None, 16)]


@pytest.mark.parametrize("dialect,cipher,key_size", CASES)
def test_decrypts_what_smbprotocol_encrypts_exactly_as_smbprotocol_does(dialect, cipher, key_size):
    # Given a session key, and a message encrypted by smbprotocol's own code for that dialect and cipher
    conn = _connection(dialect, cipher, os.urandom(key_size))
    plain = b"\xfeSMB" + os.urandom(3 * 1024 * 1024 + 5)
    buf = _wire(conn, plain)
    # When FastConnection decrypts it in place
    ours = conn._decrypt_buffer(buf, len(buf) - 16)
    # Then it gets the plaintext, as smbprotocol's own decryption of the same bytes does
    header = SMB2TransformHeader()
    header.unpack(bytes(buf[:-16]))
    assert ours == plain == Connection._decrypt(conn, header)


@pytest.mark.parametrize("dialect,cipher,key_size", CASES)
def test_what_it_encrypts_smbprotocol_decrypts(dialect, cipher, key_size):
    # Given a message encrypted by FastConnection (header and body kept apart, as they are sent)
    conn = _connection(dialect, cipher, os.urandom(key_size))
    plain = b"\xfeSMB" + os.urandom(2 * 1024 * 1024 + 3)
    sealed = conn._encrypt(plain, conn.session_table[0x1122])
    wire = bytes(sealed.head) + bytes(sealed.body)
    # When smbprotocol's own code parses and decrypts those bytes
    header = SMB2TransformHeader()
    header.unpack(wire)
    # Then it gets the message back, and the header says what smbprotocol's would
    assert Connection._decrypt(conn, header) == plain
    assert header["original_message_size"].get_value() == len(plain) and header["session_id"].get_value() == 0x1122
    assert len(wire) == 52 + len(plain)


def test_a_tampered_message_fails_authentication():
    conn = _connection(Dialects.SMB_3_1_1, Ciphers.AES_128_GCM, os.urandom(16))
    buf = _wire(conn, b"\xfeSMB" + bytes(1000))
    buf[100] ^= 1
    with pytest.raises(InvalidTag):
        conn._decrypt_buffer(buf, len(buf) - 16)


def test_a_message_it_cannot_decrypt_is_handed_on_whole():
    # An unknown session (or flags other than "encrypted") is left to smbprotocol, which reports it
    conn = _connection(Dialects.SMB_3_1_1, Ciphers.AES_128_GCM, os.urandom(16))
    buf = _wire(conn, b"\xfeSMB" + bytes(100))
    conn.session_table.clear()
    assert conn._decrypt_buffer(buf, len(buf) - 16) is None


def test_the_transport_frames_messages_both_ways_over_a_real_socket():
    # Given a FastTcp connected to a loopback peer that echoes every Direct TCP frame back
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def echo() -> None:
        peer, _ = server.accept()
        with peer:
            while data := peer.recv(1 << 20):
                peer.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    transport = FastTcp("127.0.0.1", port, 5)
    transport.connect()
    try:
        # When messages of several sizes (one larger than its first buffer) go out and come back
        messages = [b"\xfeSMB" + os.urandom(n) for n in (0, 60, 70_000, 5 * 1024 * 1024)]
        for message in messages:
            transport.send(message)
        # Then each comes back whole and in order, undecrypted
        assert [transport.recv(10) for _ in messages] == messages
        assert transport.decrypted_count == 0
    finally:
        transport.close()
        server.close()
    # And a closed transport reads as the end of the stream, as smbprotocol's does
    assert transport.recv(1) == b""
