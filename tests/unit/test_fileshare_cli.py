"""`appsvc-dr snapshots list|diff` and `appsvc-dr restore fileshare` against a local store."""
from __future__ import annotations

import logging

import pytest

from contracts import BackupDue, BackupDuePayload
from tests.unit.certs import make_cert
from tests.unit.forge import configured_store, plan_set
from tests.unit.test_fileshare_trees import change_tree, make_tree, picture
from workers.cli import main
from workers.config import load_settings
from workers.fileshare.handler import FileshareHandler
from workers.runtime.worker import JobContext

CTX = JobContext("fileshare", "fileshare:1", 0, logging.LoggerAdapter(logging.getLogger("test"), {}))


@pytest.fixture
def stamp(tmp_path, monkeypatch):
    """Two encrypted snapshots (sets set-a and set-b) of a local tree that changed in between."""
    cert = make_cert("fileshare-cli")
    (tmp_path / "cert.pem").write_bytes(cert.cert_pem)
    (tmp_path / "key.pem").write_bytes(cert.key_pem())
    env = {"APPSVC_DR_STORE__LOCAL_PATH": str(tmp_path / "store"), "APPSVC_DR_FILESHARE__SOURCE": str(tmp_path / "src"),
           "APPSVC_DR_FILESHARE__CACHE_DIR": str(tmp_path / "cache"),
           "APPSVC_DR_ENCRYPTION__CERTIFICATE": str(tmp_path / "cert.pem")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    make_tree(tmp_path / "src")
    handler = FileshareHandler(settings.fileshare, settings.retention, configured_store(settings))
    for set_id in ("set-a", "set-b"):
        plan_set(handler.store.backend, set_id, "fileshare")  # as the catalog
        handler.backup_due(BackupDue(source="t", stamp="stamp1", correlation_id=set_id,
                                     payload=BackupDuePayload(backup_set_id=set_id, components=("fileshare",))), CTX)
        if set_id == "set-a":
            change_tree(tmp_path / "src")
    return tmp_path


def test_snapshots_list_and_diff(stamp, capsys):
    # When the snapshots are listed / Then both show, complete, oldest first
    assert main(["snapshots", "list", "--stamp", "stamp1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["set-a", "set-b"] and "complete" in lines[1]
    # When they are compared (the manifests are encrypted: the key is needed)
    assert main(["snapshots", "diff", "set-a", "set-b", "--stamp", "stamp1", "--key", str(stamp / "key.pem")]) == 0
    out = capsys.readouterr().out
    # Then the changes made between them are listed
    assert "+ site/wwwroot/new/added.bin" in out and "- LogFiles/2026/11/app.log" in out
    assert "M site/wwwroot/index.html" in out and "M big/app.zip" in out
    assert "+ site/wwwroot/assets/0/renamed.js" in out and "- site/wwwroot/assets/0/f1.js" in out


def test_restore_fileshare_by_set_recreates_the_tree_and_prints_the_reacl_step(stamp, capsys):
    # When the newest set is restored into an empty directory
    target = stamp / "restored"
    assert main(["restore", "fileshare", "--stamp", "stamp1", "--set", "set-b", "--target", str(target),
                 "--key", str(stamp / "key.pem")]) == 0
    out = capsys.readouterr().out
    # Then the tree is back byte for byte and mtime for mtime, and the ReACL step is printed
    assert picture(target) == picture(stamp / "src")
    assert "47 files written" in out and "every SHA-256 verified" in out and "ReACL.cmd" in out
    # When it runs again (resumed) / Then nothing is written twice
    assert main(["restore", "fileshare", "--stamp", "stamp1", "--snapshot", "set-b", "--target", str(target),
                 "--key", str(stamp / "key.pem")]) == 0
    assert "0 files written" in capsys.readouterr().out


def test_restore_without_the_key_says_which_key_is_needed(stamp, capsys):
    # When an encrypted snapshot is restored without a private key / Then it fails with a hint
    assert main(["restore", "fileshare", "--stamp", "stamp1", "--set", "set-a", "--target", str(stamp / "r")]) == 2
    assert "how to fix" in capsys.readouterr().err
