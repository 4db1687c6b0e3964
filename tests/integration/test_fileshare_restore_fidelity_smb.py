"""`appsvc-dr restore fileshare` onto a real Samba share: every conflict with what the target holds is handled by
the stated rule or listed (exit 1, a summary, never a traceback, never exit 0 with a difference left), DOS
attributes come back, --dry-run writes nothing, a per-file failure is listed while the rest is restored, and a
killed restore's decrypted temporary data is removed by the next run."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import smbclient

from tests.unit.forge import NS, STAMP, configured_store, forge, picture
from tests.unit.test_fileshare_restore_fidelity import configure_store
from workers.cli import main
from workers.fileshare.handler import commit
from workers.fileshare.settings import FileshareSettings
from workers.fileshare.smbtree import SmbTree
from workers.fileshare.sync import Sync
from workers.repository.paths import PARTIAL
from workers.repository.repo import Repository

pytestmark = pytest.mark.integration
READONLY, HIDDEN, SYSTEM, ARCHIVE, DIRECTORY = 0x01, 0x02, 0x04, 0x20, 0x10


@pytest.fixture
def env(smb_server, tmp_path, monkeypatch):
    """An encrypted local store, a cache directory, and a fresh folder on the share (owned by the share's user)."""
    configure_store(tmp_path, monkeypatch, "restore-fidelity-smb")
    monkeypatch.setenv("APPSVC_DR_FILESHARE__WAIT", "0.1")
    monkeypatch.setenv("FIDELITY_SMB_PASSWORD", smb_server.password)
    name = f"rf-{uuid.uuid4().hex[:8]}"
    (smb_server.path / name).mkdir()
    shutil.chown(smb_server.path / name, smb_server.username)
    return SimpleNamespace(smb=smb_server, root=smb_server.path / name, name=name, key=tmp_path / "key.pem",
                           cache=tmp_path / "cache", store=configured_store())


def restore(env, snapshot: str, capsys, folder: str = "target", *extra: str) -> tuple[int, str]:
    code = main(["restore", "fileshare", "--stamp", STAMP, "--snapshot", snapshot, "--target",
                 env.smb.unc(env.name, folder), "--target-username", env.smb.username, "--target-password-env",
                 "FIDELITY_SMB_PASSWORD", "--target-port", str(env.smb.port), "--key", str(env.key), *extra])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out + captured.err


def tree(env, *folders: str) -> SmbTree:
    t = SmbTree(env.smb.unc(env.name, *folders), username=env.smb.username, password=env.smb.password,
                port=env.smb.port)
    t.connect()
    return t


def put(env, rel: str, data: bytes | None = None) -> Path:
    """A file (or, with no data, a directory) under the env folder, owned by the share's user."""
    path = env.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in [p for p in path.relative_to(env.root).parents if str(p) != "."]:
        shutil.chown(env.root / parent, env.smb.username)
    path.mkdir() if data is None else path.write_bytes(data)
    shutil.chown(path, env.smb.username)
    return path


def attrs(env, rel: str) -> int:
    return smbclient.lstat(env.smb.unc(env.name, *rel.split("/")), username=env.smb.username,
                           password=env.smb.password, port=env.smb.port).st_file_attributes


def test_dos_attributes_and_mtimes_round_trip_over_smb(env, capsys):
    # Given a source folder on the share with read-only, hidden, system and plain files and directories
    # (attributes set over SMB), synced into a snapshot
    wanted = {"src/ro.txt": READONLY | ARCHIVE, "src/hidden.txt": HIDDEN | ARCHIVE, "src/sys.txt": SYSTEM,
              "src/plain.txt": ARCHIVE, "src/hd": HIDDEN | READONLY, "src/hd/inner.txt": READONLY | HIDDEN}
    for rel in wanted:
        put(env, rel, None if rel == "src/hd" else rel.encode())
    put(env, "src/empty")
    source = tree(env, "src")
    for rel, bits in sorted(wanted.items(), key=lambda kv: -kv[0].count("/")):
        source.set_meta(rel[4:], NS - 10**9 * len(rel), bits, is_dir=rel == "src/hd")
    settings = FileshareSettings(source=env.smb.unc(env.name, "src"), username=env.smb.username,
                                 password=env.smb.password, port=env.smb.port, cache_dir=env.cache)
    repo = Repository(env.store, STAMP, cache_dir=env.cache)
    commit(repo, Sync(settings, repo, source).run("attrs", STAMP, "attrs", None))
    # When it is restored into a folder of the share that does not exist yet
    code, out = restore(env, "attrs", capsys, "restored")
    # Then the folder is created, and every file and directory has the source's attributes and mtime (exit 0)
    assert code == 0, out
    for rel, bits in wanted.items():
        back = rel.replace("src/", "restored/", 1)
        mask = READONLY | HIDDEN | SYSTEM | ARCHIVE
        assert attrs(env, back) & mask == bits & mask, rel
        assert (env.root / back).stat().st_mtime_ns // 100 == (env.root / rel).stat().st_mtime_ns // 100
    assert (env.root / "restored/empty").is_dir() and (env.root / "restored/hd/inner.txt").read_bytes() == \
        b"src/hd/inner.txt"
    # And a second restore over it finds everything identical (read-only files included) and exits 0
    code, out = restore(env, "attrs", capsys, "restored")
    assert code == 0 and "0 files written" in out and "5 already identical" in out, out
    # And with --no-attributes the files come back plain
    code, out = restore(env, "attrs", capsys, "plain", "--no-attributes")
    assert code == 0 and attrs(env, "plain/ro.txt") & (READONLY | HIDDEN) == 0 and \
        attrs(env, "plain/hidden.txt") & HIDDEN == 0


def test_each_type_conflict_is_reported_then_resolved_with_overwrite(env, capsys):
    # Given a snapshot, and a target where a read-only file, a directory and a file are in the way
    forge(env.store, "c1", {"ro.txt": b"from the snapshot", "f": b"a file", "ok.txt": b"fine"}, dirs=("empty",))
    put(env, "target/ro.txt", b"protected")
    tree(env, "target").set_meta("ro.txt", NS, READONLY)
    put(env, "target/f/inside.txt", b"a directory where a file goes")
    put(env, "target/empty", b"a file where an empty directory goes")
    # When it is restored without --overwrite
    code, out = restore(env, "c1", capsys)
    # Then it exits 1 with a summary listing the read-only file and the directory, each with how to fix it;
    # the file where the directory goes is moved aside (listed), and the rest is restored
    assert code == 1, out
    assert "NOT restored (2)" in out and "ro.txt: a read-only file is in the way" in out and "--overwrite" in out
    assert "f: a directory is where the snapshot has a file" in out
    assert "conflicts resolved (1)" in out
    assert "empty: a file was where the snapshot has a directory: moved aside" in out
    target = env.root / "target"
    assert (target / "ro.txt").read_bytes() == b"protected" and (target / "f/inside.txt").is_file()
    assert (target / "empty").is_dir() and (target / "ok.txt").read_bytes() == b"fine"
    (aside,) = [p for p in target.iterdir() if p.name.startswith("empty.appsvc-dr-aside-")]
    assert aside.read_bytes() == b"a file where an empty directory goes"
    # When it is restored again with --overwrite
    code, out = restore(env, "c1", capsys, "target", "--overwrite")
    # Then the read-only file is replaced, the directory is moved aside (nothing deleted), and it exits 0
    assert code == 0, out
    assert (target / "ro.txt").read_bytes() == b"from the snapshot" and (target / "f").read_bytes() == b"a file"
    (moved,) = [p for p in target.iterdir() if p.name.startswith("f.appsvc-dr-aside-")]
    assert (moved / "inside.txt").read_bytes() == b"a directory where a file goes"
    assert not [n for _, _, names in os.walk(target) for n in names if n.endswith(PARTIAL)]


def test_with_overwrite_a_file_where_an_empty_directory_goes_is_removed(env, capsys):
    # Given a file where the snapshot has an empty directory
    forge(env.store, "c2", {"a.txt": b"a"}, dirs=("empty",))
    put(env, "target/empty", b"in the way")
    # When it is restored with --overwrite
    code, out = restore(env, "c2", capsys, "target", "--overwrite")
    # Then the file is gone, the directory is there with the snapshot's mtime, and it exits 0
    assert code == 0, out
    assert (env.root / "target/empty").is_dir() and (env.root / "target/empty").stat().st_mtime_ns // 100 == NS // 100
    assert "removed (--overwrite)" in out


def test_names_differing_only_in_case_get_a_visible_suffix_on_a_case_insensitive_share(env, capsys):
    # Given a snapshot with two names that differ only in case (Samba matches names case-insensitively for
    # SMB2 clients unless `case sensitive = yes`)
    forge(env.store, "case", {"d/README.txt": b"upper", "d/Readme.txt": b"mixed", "D2/x": b"x", "d2/y": b"y"},
          dirs=("d", "D2", "d2"))
    # When it is restored onto the share
    code, out = restore(env, "case", capsys)
    # Then both come back, the second under a visible suffix, listed, and the run exits 1 (not identical)
    assert code == 1, out
    target = env.root / "target"
    assert (target / "d/README.txt").read_bytes() == b"upper"
    assert (target / "d/Readme (case 2).txt").read_bytes() == b"mixed"
    assert (target / "D2/x").read_bytes() == b"x" and (target / "d2 (case 2)/y").read_bytes() == b"y"
    assert "restored under another name (2)" in out and "d/Readme.txt: differs from another name only in case" in out


def test_dry_run_prints_the_plan_and_writes_nothing(env, capsys):
    # Given a snapshot and a target holding a read-only file in the way
    forge(env.store, "dry", {"ro.txt": b"new", "new.txt": b"new"}, dirs=("d",))
    put(env, "target/ro.txt", b"older")
    tree(env, "target").set_meta("ro.txt", NS, READONLY)
    before = picture(env.root)
    # When a dry run is made into it, and into a folder that does not exist
    code, out = restore(env, "dry", capsys, "target", "--dry-run")
    code2, out2 = restore(env, "dry", capsys, "missing", "--dry-run")
    # Then the plan names what would be created and the conflict, and nothing on the share changed
    assert code == 1 and "1 directories to create, 1 files to create" in out and "ro.txt: a read-only file" in out
    assert code2 == 0 and "does not exist yet" in out2 and "2 files to create" in out2
    assert picture(env.root) == before and not (env.root / "missing").exists()


def test_a_file_the_target_refuses_is_listed_and_the_rest_is_restored(env, capsys):
    # Given a snapshot, and in the target a directory the share's user may not write into (owned by root)
    forge(env.store, "deny", {"locked/x.txt": b"x", "open/y.txt": b"y", "z.txt": b"z"}, dirs=("locked", "open"))
    put(env, "target")
    (env.root / "target/locked").mkdir(mode=0o755)
    # When it is restored
    code, out = restore(env, "deny", capsys)
    # Then that file (and the directory's mtime) is listed with the reason and a fix, the others are restored with
    # their mtimes, and it exits 1
    assert code == 1 and "NOT restored (2)" in out and "    locked/x.txt: access denied" in out, out
    assert "write access" in out
    assert (env.root / "target/open/y.txt").read_bytes() == b"y" and (env.root / "target/z.txt").read_bytes() == b"z"
    assert (env.root / "target/open").stat().st_mtime_ns // 100 == NS // 100


def test_a_killed_restores_temporary_data_is_removed_by_the_next_run(env, capsys):
    # Given a restore process killed while it held decrypted packs in its private temporary folder
    temp_root = env.cache / "restore-tmp"
    script = ("import os, signal, sys; from collections import Counter; from pathlib import Path; "
              "from workers.repository.packcache import PackCache; "
              "c = PackCache(None, None, Counter(), temp_root=Path(sys.argv[1])); "
              "(c.dir / 'pack1').write_bytes(b'decrypted'); os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", script, str(temp_root)], env={**os.environ})
    assert proc.returncode == -signal.SIGKILL
    (left,) = list(temp_root.iterdir())
    assert (left / "pack1").exists() and temp_root.stat().st_mode & 0o777 == 0o700
    # When the next restore runs
    forge(env.store, "next", {"a.txt": b"a"})
    code, out = restore(env, "next", capsys)
    # Then it succeeds and the killed run's folder is gone (its own removed too)
    assert code == 0, out
    assert list(temp_root.iterdir()) == []


def test_a_target_share_that_does_not_exist_gets_a_hint_naming_target(env, capsys):
    # Given a snapshot
    forge(env.store, "nos", {"a.txt": b"a"})
    # When it is restored onto a share the server does not have
    code = main(["restore", "fileshare", "--stamp", STAMP, "--snapshot", "nos", "--target",
                 env.smb.unc("folder", share="no-such-share"), "--target-username", env.smb.username,
                 "--target-password-env", "FIDELITY_SMB_PASSWORD", "--target-port", str(env.smb.port),
                 "--key", str(env.key)])
    err = capsys.readouterr().err
    # Then it exits 2 with a hint about --target, not about the backup source's setting
    assert code == 2 and "--target" in err and "APPSVC_DR_FILESHARE__SOURCE" not in err, err


def test_names_an_smb_target_cannot_hold_are_listed_and_the_rest_restored(env, capsys):
    # Given a snapshot (from a Linux source) with names Windows cannot hold, one of them a directory
    forge(env.store, "win", {"what?.txt": b"q", "bad:dir/x.txt".replace(":", "|"): b"x", "ok.txt": b"ok"},
          dirs=("bad|dir",))
    # When it is restored onto the share
    code, out = restore(env, "win", capsys)
    # Then both are listed (the file under the directory too), the rest is restored, and it exits 1
    assert code == 1 and "NOT restored (3)" in out and "what?.txt: a character Windows file names cannot hold" in out
    assert "bad|dir/x.txt: its directory 'bad|dir' could not be restored" in out, out
    assert (env.root / "target/ok.txt").read_bytes() == b"ok" and not (env.root / "target/bad|dir").exists()
