"""A restored large file is written with several WRITEs in flight on its handle (``workers.fileshare.smbwrite``)
to a real Samba share: the bytes land in order whatever the split of the caller's buffers, and a failure half-way
leaves neither the temporary file nor a changed file behind."""
from __future__ import annotations

import os
import shutil
import uuid

import pytest

from workers.fileshare import smbtarget
from workers.fileshare.smbtree import SmbTree

pytestmark = pytest.mark.integration
MiB = 1 << 20


@pytest.fixture
def tree(smb_server):
    name = f"pw-{uuid.uuid4().hex[:8]}"
    (smb_server.path / name).mkdir()
    shutil.chown(smb_server.path / name, smb_server.username)
    tree = SmbTree(smb_server.unc(name), username=smb_server.username, password=smb_server.password,
                   port=smb_server.port)
    tree.connect()
    yield tree, smb_server.path / name
    tree.close()
    shutil.rmtree(smb_server.path / name, ignore_errors=True)


@pytest.mark.parametrize("depth", [1, 4])
def test_pipelined_writes_land_in_order(tree, monkeypatch, depth):
    # Given WRITEs of 1 MiB, `depth` of them in flight, and buffers that straddle WRITE boundaries
    share, path = tree
    monkeypatch.setattr(smbtarget, "STREAM_WRITE", MiB)
    monkeypatch.setattr(smbtarget, "WRITES_IN_FLIGHT", depth)
    pieces = [os.urandom(n) for n in (300_000, 2 * MiB + 17, 1, MiB, 5 * MiB - 3, 123_456)]
    # When the file is written through the tree's temporary-file-and-rename path
    with share.open_write("big.bin") as fh:
        for piece in pieces:
            assert fh.write(memoryview(piece)) == len(piece)
    # Then the share holds exactly those bytes, under the final name only
    assert (path / "big.bin").read_bytes() == b"".join(pieces)
    assert sorted(p.name for p in path.iterdir()) == ["big.bin"]


def test_failure_with_writes_in_flight_leaves_the_existing_file(tree, monkeypatch):
    # Given a file already on the share, and WRITEs of 1 MiB with 4 in flight
    share, path = tree
    (path / "big.bin").write_bytes(b"the operator's copy")
    monkeypatch.setattr(smbtarget, "STREAM_WRITE", MiB)
    monkeypatch.setattr(smbtarget, "WRITES_IN_FLIGHT", 4)
    # When the restore fails after 6 MiB were sent
    with pytest.raises(RuntimeError, match="damaged blob"):
        with share.open_write("big.bin") as fh:
            fh.write(os.urandom(6 * MiB))
            raise RuntimeError("damaged blob")
    # Then the file there is unchanged and no temporary file is left
    assert (path / "big.bin").read_bytes() == b"the operator's copy"
    assert sorted(p.name for p in path.iterdir()) == ["big.bin"]
