"""`appsvc-dr restore fileshare` into a real local directory: conflicts handled by rule or listed with exit 1
(never exit 0 with a difference left), DOS attributes kept as metadata, --dry-run writes nothing, and library
INFO logs stay quiet unless --verbose."""
from __future__ import annotations

import logging
import os
from types import SimpleNamespace

import pytest

from tests.fixtures import require_service
from tests.unit.certs import make_cert
from tests.unit.forge import NS, STAMP, configured_store, forge, picture
from workers.cli import main
from workers.fileshare.localtree import ATTRS_XATTR, LocalTree
from workers.fileshare.restore import Restorer
from workers.repository.repo import Repository
from workers.storage.codec import KeyRing


def configure_store(tmp_path, monkeypatch, name: str) -> None:
    """An encrypted local store under ``tmp_path`` (its key in key.pem) and a cache dir, set in the environment."""
    cert = make_cert(name)
    (tmp_path / "cert.pem").write_bytes(cert.cert_pem)
    (tmp_path / "key.pem").write_bytes(cert.key_pem())
    monkeypatch.setenv("APPSVC_DR_STORE__LOCAL_PATH", str(tmp_path / "store"))
    monkeypatch.setenv("APPSVC_DR_ENCRYPTION__CERTIFICATE", str(tmp_path / "cert.pem"))
    monkeypatch.setenv("APPSVC_DR_FILESHARE__CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def host(tmp_path, monkeypatch):
    configure_store(tmp_path, monkeypatch, "restore-fidelity")
    return SimpleNamespace(root=tmp_path, target=tmp_path / "target", key=tmp_path / "key.pem",
                           cache=tmp_path / "cache", store=configured_store())


def restore(host, snapshot: str, capsys, *extra: str) -> tuple[int, str]:
    code = main(["restore", "fileshare", "--stamp", STAMP, "--snapshot", snapshot, "--target", str(host.target),
                 "--key", str(host.key), *extra])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out + captured.err


def test_a_file_where_an_empty_directory_goes_never_stays_behind_an_exit_0(host, capsys):
    # Given a target holding a file where the snapshot has an empty directory, and a directory where it has a file
    forge(host.store, "s", {"f.txt": b"file", "site/a.txt": b"a"}, dirs=("empty", "site"))
    (host.target / "f.txt").mkdir(parents=True)
    (host.target / "empty").write_bytes(b"in the way")
    # When it is restored
    code, out = restore(host, "s", capsys)
    # Then the file is moved aside and the directory made (with its mtime); the directory in the way of f.txt is
    # listed with the fix, and the run exits 1
    assert code == 1 and "NOT restored (1)" in out and "f.txt: a directory is where the snapshot has a file" in out
    assert (host.target / "empty").is_dir() and (host.target / "empty").stat().st_mtime_ns == NS
    (aside,) = [p for p in host.target.iterdir() if p.name.startswith("empty.appsvc-dr-aside-")]
    assert aside.read_bytes() == b"in the way" and (host.target / "site/a.txt").read_bytes() == b"a"
    # And with --overwrite the directory is moved aside and the file written: exit 0
    code, out = restore(host, "s", capsys, "--overwrite")
    assert code == 0 and (host.target / "f.txt").read_bytes() == b"file", out


def test_dry_run_into_a_missing_local_folder_creates_nothing(host, capsys):
    # Given a snapshot
    forge(host.store, "s", {"a/b.txt": b"b"}, dirs=("a",))
    before = picture(host.root)
    # When a dry run targets a folder that does not exist
    code, out = restore(host, "s", capsys, "--dry-run")
    # Then the plan is printed and nothing is created (no target, no temporary folder)
    assert code == 0 and "1 directories to create, 1 files to create" in out and "nothing was written" in out
    assert picture(host.root) == before and not host.target.exists()


def test_local_targets_keep_dos_attributes_as_metadata(host):
    # Given a snapshot with a read-only hidden file and a hidden directory
    repo = forge(host.store, "s", {"d/ro.txt": b"ro", "d/plain.txt": b"p"}, dirs=("d",))
    keys = KeyRing.from_files(keys=[host.key])
    manifest = repo.manifest("s", keys, cached=False)
    entries = {e.path: e for e in manifest.entries}
    entries["d/ro.txt"].attrs, entries["d"].attrs = 0x23, 0x12
    # When it is restored into a local directory
    report = Restorer(Repository(host.store, STAMP), LocalTree(host.target, create=True), keys=keys,
                      temp_root=host.cache / "restore-tmp").run(manifest)
    # Then the read-only file has no write permission, every entry keeps its attributes in an extended attribute,
    # and the run is exact
    assert report.exact and report.files_restored == 2
    assert not os.stat(host.target / "d/ro.txt").st_mode & 0o222
    assert os.stat(host.target / "d/plain.txt").st_mode & 0o200
    try:
        assert os.getxattr(host.target / "d/ro.txt", ATTRS_XATTR) == b"0x23"
        assert os.getxattr(host.target / "d", ATTRS_XATTR) == b"0x2"
    except OSError as exc:
        require_service("user extended attributes on the test file system", str(exc))
    # And a second restore finds the read-only file identical
    again = Restorer(Repository(host.store, STAMP), LocalTree(host.target, create=True), keys=keys).run(manifest)
    assert again.exact and again.files_identical == 2 and not again.failed


def test_library_info_logs_are_quiet_unless_verbose(host, capsys):
    # Given a snapshot
    forge(host.store, "s", {"a.txt": b"a"})
    # When it is restored without and then with --verbose
    restore(host, "s", capsys)
    quiet = logging.getLogger("smbprotocol.connection").getEffectiveLevel()
    main(["-v", "restore", "fileshare", "--stamp", STAMP, "--snapshot", "s", "--target", str(host.target),
          "--key", str(host.key)])
    loud = logging.getLogger("smbprotocol.connection").getEffectiveLevel()
    # Then smbprotocol's INFO lines are filtered by default and shown with --verbose
    assert quiet == logging.WARNING and loud <= logging.INFO
