"""`appsvc-dr restore fileshare` onto a real Samba share only ever writes inside its target directory: forged
manifests are refused before any request, a link planted in the target is not written through, and a file that
fails verification leaves the file already on the share intact."""
from __future__ import annotations

import os
import shutil
import socket
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.unit.certs import make_cert
from tests.unit.forge import NS, STAMP, cli_restore, configured_store, forge, partials, picture, traversals
from workers.fileshare.restore import Restorer
from workers.fileshare.smbtree import SmbTree
from workers.repository.manifest import Entry, Manifest
from workers.repository.paths import UnsafeEntryError
from workers.repository.repo import Repository

pytestmark = pytest.mark.integration


@pytest.fixture
def share(smb_server, tmp_path, monkeypatch):
    """An encrypted local store (forged with its certificate only) and, on the share, a directory holding the
    restore target (with a file in it) and files around it that must never change."""
    cert = make_cert("restore-safety-smb")
    (tmp_path / "cert.pem").write_bytes(cert.cert_pem)
    (tmp_path / "key.pem").write_bytes(cert.key_pem())
    monkeypatch.setenv("APPSVC_DR_STORE__LOCAL_PATH", str(tmp_path / "store"))
    monkeypatch.setenv("APPSVC_DR_ENCRYPTION__CERTIFICATE", str(tmp_path / "cert.pem"))
    monkeypatch.setenv("RESTORE_SAFETY_SMB_PASSWORD", smb_server.password)
    name = f"rs-{uuid.uuid4().hex[:8]}"
    root = smb_server.path / name
    for rel, data in {"escape.txt": b"operator's file", "x": b"another", "victim/secret.txt": b"keep me",
                      "target/keep.txt": b"already there"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    for dirpath, dirnames, filenames in os.walk(root):        # the share's user could write all of it
        for item in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            shutil.chown(item, smb_server.username)
    return SimpleNamespace(smb=smb_server, root=root, target=root / "target", unc=smb_server.unc(name, "target"),
                           key=tmp_path / "key.pem", store=configured_store())


def restore(share, snapshot: str, capsys) -> tuple[int, str]:
    return cli_restore(snapshot, share.unc, share.key, capsys, "--target-username", share.smb.username,
                       "--target-password-env", "RESTORE_SAFETY_SMB_PASSWORD", "--target-port", str(share.smb.port))


@pytest.mark.parametrize("hostile, rule", sorted(traversals(Path("/srv/victim")).items()))
def test_a_forged_entry_is_refused_and_nothing_on_the_share_changes(share, capsys, hostile, rule):
    # Given a forged snapshot with a good entry and a hostile one
    forge(share.store, "forged", {"site/ok.txt": b"fine", hostile: b"evil"}, dirs=("site",))
    before = picture(share.root)
    # When it is restored onto the share
    code, err = restore(share, "forged", capsys)
    # Then the restore exits 2 naming the entry and the rule, and nothing on the share changed
    assert code == 2 and repr(hostile)[:60] in err and rule in err and "tampered" in err
    assert picture(share.root) == before


def test_a_bad_path_is_refused_before_any_connection_is_made(share):
    # Given an SMB target on a port where this test listens (any connection attempt would show up)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    tree = SmbTree(share.smb.unc("share"), username=share.smb.username, password=share.smb.password,
                   port=listener.getsockname()[1])
    manifest = Manifest("mem", STAMP, "mem", "x", entries=[Entry("ok", False, 0, NS, 32),
                                                           Entry("site/../../escape.txt", False, 0, NS, 32)])
    try:
        # When a restore or a target call names a path outside the tree / Then each is refused
        with pytest.raises(UnsafeEntryError, match="'..' component"):
            Restorer(Repository(share.store, STAMP), tree).run(manifest)
        for call in (lambda: tree.makedirs("a/../../b"), lambda: tree.set_mtime("C:x", NS),
                     lambda: tree.open_write("..\\escape.txt").__enter__(), lambda: tree.stat("/abs")):
            with pytest.raises(UnsafeEntryError):
                call()
        # And no TCP connection was ever attempted
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()


def test_a_link_in_the_target_leading_out_of_the_share_is_not_written_through(share, capsys):
    # Given a directory beside the share that the share's user may write, and a symlink to it planted in the
    # target (Samba 4.17 shows no reparse point for it: it answers as if the name were not there)
    outside = share.smb.path.parent / f"outside-{uuid.uuid4().hex[:8]}"
    outside.mkdir()
    (outside / "index.html").write_bytes(b"outside the share")
    for item in (outside, outside / "index.html"):
        shutil.chown(item, share.smb.username)
    os.symlink(outside, share.target / "site")
    forge(share.store, "snap", {"site/index.html": b"restored", "site/new.txt": b"new"})
    before, outside_before = picture(share.root), picture(outside)
    try:
        # When the snapshot is restored onto the share
        code, err = restore(share, "snap", capsys)
        # Then it stops with exit 2 naming the link, and neither the share nor the outside directory changed
        assert code == 2 and "target/site can be neither created nor opened" in err
        assert picture(share.root) == before and picture(outside) == outside_before
    finally:
        shutil.rmtree(outside)


def test_a_file_that_fails_verification_leaves_the_file_on_the_share_intact(share, capsys):
    # Given a file already on the share, replaced by a first restore (through a temporary name)
    (share.target / "site").mkdir()
    shutil.chown(share.target / "site", share.smb.username)
    (share.target / "site/index.html").write_bytes(b"old version")
    shutil.chown(share.target / "site/index.html", share.smb.username)
    forge(share.store, "v2", {"site/index.html": b"version 2", "site/other.txt": b"other"})
    assert restore(share, "v2", capsys)[0] == 0
    assert (share.target / "site/index.html").read_bytes() == b"version 2" and not partials(share.root)
    assert (share.target / "site/index.html").stat().st_mtime_ns // 100 == NS // 100
    # And a newer snapshot whose blob does not match its id
    forge(share.store, "v3", {"site/index.html": b"version 3 is longer"},
          lies={"site/index.html": b"tampered content!!!"})
    before = picture(share.root)
    # When it is restored over it
    code, err = restore(share, "v3", capsys)
    # Then the file is listed as not restored (exit 1), the file on the share is unchanged, no temporary file is left
    assert code == 1 and "NOT restored (1)" in err and "    site/index.html: " in err and \
        "does not match its id" in err
    assert picture(share.root) == before and not partials(share.root)
