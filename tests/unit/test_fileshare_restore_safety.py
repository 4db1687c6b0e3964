"""`appsvc-dr restore fileshare` into a real local directory only ever writes inside its target: forged manifests
(made with the public certificate only), symlinks planted in the target and blobs that fail verification stop
the restore with exit 2 naming the entry, and nothing outside the target (nor an existing file) is touched."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.unit.certs import make_cert
from tests.unit.forge import NS, STAMP, cli_restore, configured_store, forge, partials, picture, traversals
from workers.artifacts.setmanifest import artifact_key
from workers.config import load_settings
from workers.drill import checks
from workers.fileshare.localtree import LocalTree
from workers.fileshare.restore import Restorer
from workers.fileshare.settings import FileshareSettings
from workers.fileshare.sync import Sync
from workers.repository.manifest import Entry, Manifest
from workers.repository.paths import PARTIAL, UnsafeEntryError
from workers.repository.repo import Repository
from workers.storage.codec import KeyRing


@pytest.fixture
def host(tmp_path, monkeypatch):
    """An encrypted local store (the attacker has its certificate, not its key) and a restore host: a target
    directory with a file in it, and the operator's files around it."""
    cert = make_cert("restore-safety")
    (tmp_path / "cert.pem").write_bytes(cert.cert_pem)
    (tmp_path / "key.pem").write_bytes(cert.key_pem())
    monkeypatch.setenv("APPSVC_DR_STORE__LOCAL_PATH", str(tmp_path / "store"))
    monkeypatch.setenv("APPSVC_DR_ENCRYPTION__CERTIFICATE", str(tmp_path / "cert.pem"))
    root = tmp_path / "host"
    for rel, data in {"escape.txt": b"operator's file", "x": b"another", "victim/secret.txt": b"keep me",
                      "target/keep.txt": b"already there"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return SimpleNamespace(root=root, target=root / "target", key=tmp_path / "key.pem", store_dir=tmp_path / "store",
                           store=configured_store())


def restore(host, snapshot: str, capsys) -> tuple[int, str]:
    return cli_restore(snapshot, str(host.target), host.key, capsys)


@pytest.mark.parametrize("hostile, rule", sorted(traversals(Path("/srv/victim")).items()))
def test_a_forged_entry_stops_the_restore_before_anything_is_written(host, capsys, hostile, rule):
    # Given a forged snapshot with a good entry and a hostile one (the absolute form aims at the host's files)
    hostile = hostile.replace("/srv/victim", str(host.root))
    forge(host.store, "forged", {"site/ok.txt": b"fine", hostile: b"evil"}, dirs=("site",))
    before = picture(host.root)
    # When it is restored
    code, err = restore(host, "forged", capsys)
    # Then the restore exits 2 naming the entry and the rule, and nothing on the host changed (not even the target)
    assert code == 2
    assert repr(hostile)[:60] in err and rule in err and "how to fix" in err and "tampered" in err
    assert picture(host.root) == before


def test_the_restorer_and_the_target_refuse_a_bad_path_even_without_the_manifest_check(host):
    # Given a manifest built in memory (not loaded from the store) with a traversal entry
    repo = Repository(host.store, STAMP)
    manifest = Manifest("mem", STAMP, "mem", "x", entries=[Entry("ok", False, 0, NS, 32),
                                                           Entry("../escape.txt", False, 0, NS, 32)])
    before = picture(host.root)
    # When it is restored / Then the selection is refused before the target is even opened
    with pytest.raises(UnsafeEntryError, match=r"'\.\./escape\.txt'"):
        Restorer(repo, LocalTree(host.root / "not-created", create=True)).run(manifest)
    # And the target itself refuses such paths on every write
    target = LocalTree(host.target)
    target.connect()
    for call in (lambda: target.makedirs("a/../../b"), lambda: target.set_mtime("../x", NS),
                 lambda: target.open_write("../escape.txt").__enter__(), lambda: target.stat("/etc/passwd")):
        with pytest.raises(UnsafeEntryError):
            call()
    target.close()
    assert picture(host.root) == before


@pytest.mark.parametrize("plant, entry", [
    ("site/index.html -> ../victim/secret.txt", "site/index.html"),   # a file symlink pointing outside
    ("site -> ../victim", "site"),                                    # a directory symlink as a parent component
    ("site -> ../nowhere", "site"),                                   # a dangling one: never created through
])
def test_a_symlink_in_the_target_is_never_followed_nor_removed(host, capsys, plant, entry):
    # Given a snapshot of ordinary files and a symlink planted in the target where the restore must write
    forge(host.store, "snap", {"site/index.html": b"restored", "site/new.txt": b"new", "top.txt": b"top"})
    link, to = plant.split(" -> ")
    (host.target / link).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(to, host.target / link)
    before = picture(host.root)
    # When the snapshot is restored
    code, err = restore(host, "snap", capsys)
    # Then it stops with exit 2 naming the link; the link, its target and everything outside are untouched
    assert code == 2 and f"{entry} is a symbolic link" in err and "never follows" in err
    after = picture(host.root)
    assert {k: v for k, v in after.items() if not k.startswith("target/")} == \
        {k: v for k, v in before.items() if not k.startswith("target/")}
    assert after[f"target/{link}"] == ("link", to) and not (host.root / "nowhere").exists()
    assert not partials(host.root)


@pytest.mark.parametrize("damage", ["a blob that does not match its id", "a corrupt pack"])
def test_a_file_that_fails_verification_leaves_the_existing_file_intact(host, capsys, damage):
    # Given a target restored from a first snapshot
    forge(host.store, "v2", {"site/index.html": b"version 2", "site/other.txt": b"other"})
    assert restore(host, "v2", capsys)[0] == 0
    packs = set((host.store_dir / STAMP / "fileshare" / "packs").iterdir())
    # And a newer snapshot whose content fails verification
    if damage == "a corrupt pack":
        forge(host.store, "v3", {"site/index.html": b"version 3 is longer"})
        (pack,) = [p for p in set((host.store_dir / STAMP / "fileshare" / "packs").iterdir()) - packs
                   if "." not in p.name]
        data = bytearray(pack.read_bytes())
        data[len(data) // 2] ^= 0xFF
        pack.write_bytes(bytes(data))
    else:
        forge(host.store, "v3", {"site/index.html": b"version 3 is longer"},
              lies={"site/index.html": b"tampered content!!!"})
    before = picture(host.root)
    # When it is restored over the first
    code, err = restore(host, "v3", capsys)
    # Then the file is listed as not restored (exit 1, partial), the existing file keeps its content and mtime,
    # and no temporary file is left
    assert code == 1 and "NOT restored (1)" in err and "    site/index.html: " in err and "another snapshot" in err
    assert picture(host.root) == before
    assert (host.target / "site/index.html").read_bytes() == b"version 2" and not partials(host.root)


def test_a_leftover_temporary_file_is_replaced_and_files_get_the_usual_mode(host, capsys):
    # Given a temporary file left by an interrupted restore
    forge(host.store, "snap", {"site/index.html": b"restored"})
    (host.target / "site").mkdir()
    (host.target / f"site/.index.html{PARTIAL}").write_bytes(b"half")
    # When the snapshot is restored
    assert restore(host, "snap", capsys)[0] == 0
    # Then the file is complete with its mtime and the umask's mode, and the leftover is gone
    restored = host.target / "site/index.html"
    umask = os.umask(0o22)
    os.umask(umask)
    assert restored.read_bytes() == b"restored" and restored.stat().st_mtime_ns == NS
    assert restored.stat().st_mode & 0o777 == 0o666 & ~umask and not partials(host.root)


def test_a_sync_skips_names_no_restore_would_write_and_its_snapshot_still_restores(host, tmp_path):
    # Given a local source with names Windows cannot hold (legal on Linux) beside ordinary ones
    src = tmp_path / "src"
    (src / "site").mkdir(parents=True)
    for name in (b"ok.txt", b"a:b.txt", b"tab\tname", b"back\\slash", b"latin1-caf\xe9.txt"):
        (src / "site" / os.fsdecode(name)).write_bytes(b"data")
    repo = Repository(host.store, STAMP, cache_dir=tmp_path / "cache")
    # When it is synced
    result = Sync(FileshareSettings(source=str(src), cache_dir=tmp_path / "cache"), repo, LocalTree(src)) \
        .run("s1", STAMP, "s1", None)
    repo.put_manifest(result.manifest)
    # Then the odd names are recorded as skipped (the snapshot is partial) and the manifest loads and restores
    manifest = repo.manifest("s1", KeyRing.from_files(keys=[host.key]), cached=False)
    assert sorted(s["path"] for s in manifest.skipped) == \
        ["'site/latin1-caf\\udce9.txt'", "'site/tab\\tname'", "site/a:b.txt", "site/back\\slash"]
    assert manifest.partial and [e.path for e in manifest.files()] == ["site/ok.txt"]
    Restorer(repo, LocalTree(tmp_path / "r", create=True), keys=KeyRing.from_files(keys=[host.key])).run(manifest)
    assert (tmp_path / "r/site/ok.txt").read_bytes() == b"data"


def test_the_drill_restores_through_the_same_checks_and_fails_on_a_forged_set(host, tmp_path):
    # Given a backup set whose file-share snapshot was forged with a traversal entry
    repo = forge(host.store, "forged", {"site/ok.txt": b"fine", "site/../../escape.txt": b"evil"})
    repo.meta.put(artifact_key(STAMP, "set-1", "fileshare", "snapshot.json"),
                  lambda: io.BytesIO(json.dumps({"snapshot_id": "forged"}).encode()))
    before = picture(host.root)
    # When the drill checks the set's file share
    drill = checks.Drill(load_settings(), host.store, KeyRing.from_files(keys=[host.key]), STAMP, "set-1", "d1",
                         tmp_path / "scratch")
    [result] = checks.fileshare(drill)
    # Then the component fails naming the entry and the rule, with the hint, and nothing was written anywhere
    assert result.result == "failed" and "'site/../../escape.txt'" in result.error and "'..' component" in result.error
    assert "tampered" in result.hint
    assert picture(host.root) == before and not (tmp_path / "scratch" / "fileshare-d1").exists()
