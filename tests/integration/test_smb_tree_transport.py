"""A share tree over smbprotocol's own connection against a real smbd: reads and writes, with and without SMB 3
encryption (the receive path is the library's public one; no transport of our own)."""
from __future__ import annotations

import hashlib
import os

import pytest
from smbprotocol.connection import Connection

from tests.fixtures import started
from tests.fixtures.smbd import smbd_server
from tests.integration.test_fileshare_smb import share_dir
from workers.fileshare.opener import open_tree
from workers.fileshare.tree import Stat

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("encrypt", [True, False])
def test_a_tree_reads_and_writes_over_smbprotocols_own_connection(encrypt):
    # Given a share with a 9 MiB file and a small one
    with started("Samba smbd", smbd_server()) as smb:
        src, unc = share_dir(smb)
        big, small = os.urandom(9 * 1024 * 1024 + 17), b"small file"
        (src / "big.bin").write_bytes(big)
        (src / "small.txt").write_bytes(small)
        tree = open_tree(unc, username=smb.username, password=smb.password, port=smb.port, encrypt=encrypt)
        tree.connect()
        try:
            # When the big file is streamed, the small one read in one compound request, and a file written
            with tree.open_read("big.bin") as stream:
                digest, size = hashlib.sha256(), 0
                while data := stream.read(1 << 20):
                    digest.update(data)
                    size += len(data)
            listed = {s.name: s for s in tree.scandir("")}
            got = tree.read("small.txt", listed["small.txt"], 1 << 20)
            with tree.open_write("copy.bin") as out:
                out.write(big[:3 * 1024 * 1024])
            (connection,) = tree._kw["connection_cache"].values()
            sessions = list(connection.session_table.values())
        finally:
            tree.close()
        # Then every byte arrives intact, through smbprotocol's own Connection class, whose sessions encrypt
        # exactly when asked to
        assert (size, digest.hexdigest()) == (len(big), hashlib.sha256(big).hexdigest())
        assert got is not None and got[0] == small and isinstance(got[1], Stat)
        assert (src / "copy.bin").read_bytes() == big[:3 * 1024 * 1024]
        assert type(connection) is Connection
        assert sessions and all(bool(s.encrypt_data) is encrypt for s in sessions)
