"""The hard tree of issue 13, end to end on Samba: synced from a real share and restored (``appsvc-dr restore
fileshare``) into a fresh folder of the share, it comes back equal — content, mtimes (1960 and 2100 too), empty
directories, 660-character paths, 255-character names, both Unicode forms of "café", emoji, DOS attributes on
files and a directory — and a second restore finds everything identical and exits 0."""
from __future__ import annotations

import hashlib
import os
import shutil
import unicodedata

import pytest

from tests.integration.test_fileshare_restore_fidelity_smb import env, restore, tree  # noqa: F401 (env: fixture)
from tests.unit.forge import STAMP
from tests.unit.test_fileshare_trees import MiB, picture
from workers.fileshare.handler import commit
from workers.fileshare.settings import FileshareSettings
from workers.fileshare.smbtree import SmbTree
from workers.fileshare.sync import Sync
from workers.fileshare.tree import ARCHIVE, DIRECTORY, HIDDEN, READONLY, SYSTEM, join
from workers.repository.repo import Repository

pytestmark = pytest.mark.integration
NS = 1_760_000_000_123_456_700
Y1960, Y2100 = -315_619_200_000_000_000 + 1_234_500, 4_102_444_800_000_000_000 + 9_876_500
MASK = READONLY | HIDDEN | SYSTEM | ARCHIVE | DIRECTORY
DEEP = "/".join(f"{i}" * 100 for i in range(6))                    # 6 x 100 characters: with the rest, a 663-character path
CAFE_NFC, CAFE_NFD = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
ATTRIBUTES = {"attrs/ro.txt": READONLY | ARCHIVE, "attrs/hidden.txt": HIDDEN, "attrs/system.txt": SYSTEM | HIDDEN,
              "attrs/archive.txt": ARCHIVE, "attrs/locked-dir": READONLY | HIDDEN | SYSTEM,
              "attrs/locked-dir/inner.txt": READONLY | HIDDEN}


def hard_tree(root, owner: str) -> dict[str, int]:
    """The hard tree under ``root`` (server side, owned by the share's user): file path -> mtime_ns set."""
    same = os.urandom(40_000)
    files = {
        f"deep/{DEEP}/{'f' * 48}.txt": b"at the end of a 660-character path",
        "n" * 255: b"a 255-character name",
        f"{'d' * 255}/{'x' * 255}": b"255 characters twice",
        f"unicode/{CAFE_NFC}.txt": b"composed",
        f"unicode/{CAFE_NFD}.txt": b"decomposed",
        f"unicode/{CAFE_NFC}/inner.txt": b"in the composed directory",
        "emoji/🚀 launch 🎉.txt": "🚀".encode() * 100,
        "emoji/📁👍/🙂": b"",
        "zero/empty1": b"", "zero/empty2": b"",
        "dup/a.bin": same, "dup/b.bin": same, "dup/sub/c.bin": same,
        "time/1960.txt": b"old", "time/2100.txt": b"future",
        **{rel: rel.encode() for rel in ATTRIBUTES if rel != "attrs/locked-dir"},
    }
    mtimes = {rel: NS - i * 1_000_000_000 for i, rel in enumerate(sorted(files))}
    mtimes["time/1960.txt"], mtimes["time/2100.txt"] = Y1960, Y2100
    for rel, data in files.items():
        _put(root, rel, data, mtimes[rel])
    big = root / "big/large.bin"
    big.parent.mkdir()
    with open(big, "wb") as fh:                                   # 64 MiB, written (and later read) in pieces
        for i in range(64):
            fh.write(hashlib.sha256(str(i).encode()).digest() * (MiB // 32))
    os.utime(big, ns=(NS, NS))
    for i in range(200):
        (root / f"empties/e{i:03d}").mkdir(parents=True)
    (root / "attrs/locked-dir").mkdir(exist_ok=True)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            shutil.chown(os.path.join(dirpath, name), owner)
    return mtimes


def _put(root, rel: str, data: bytes, mtime_ns: int) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def listing(t: SmbTree, rel: str = "") -> dict[str, tuple]:
    """Every entry under ``rel`` as the SMB server reports it: (is_dir, size, mtime_ns, DOS attributes)."""
    out = {}
    for st in t.scandir(rel):
        path = join(rel, st.name)
        out[path] = (st.is_dir, st.size, st.mtime_ns, st.attrs & MASK)
        if st.is_dir:
            out.update(listing(t, path))
    return out


def test_the_hard_tree_syncs_from_samba_and_restores_equal_to_a_fresh_samba_folder(env, capsys):
    # Given the hard tree on the share, with DOS attributes set over SMB on files and a directory (innermost
    # first, so a read-only directory is set last) and the directories' mtimes set last of all
    hard_tree(env.root / "src", env.smb.username)
    source = tree(env, "src")
    for rel, bits in sorted(ATTRIBUTES.items(), key=lambda kv: -kv[0].count("/")):
        is_dir = rel == "attrs/locked-dir"
        source.set_meta(rel, NS if is_dir else None, bits | (DIRECTORY if is_dir else 0), is_dir=is_dir)
    source.set_meta("empties/e007", Y1960, None, is_dir=True)
    before = listing(source)
    assert {f"unicode/{CAFE_NFC}.txt", f"unicode/{CAFE_NFD}.txt"} <= before.keys()
    assert all(before[rel][3] & bits == bits for rel, bits in ATTRIBUTES.items())
    assert before["time/1960.txt"][2] // 100 == Y1960 // 100 and before["time/2100.txt"][2] // 100 == Y2100 // 100
    # When it is synced into a snapshot and restored into a folder of the share that does not exist yet
    settings = FileshareSettings(source=env.smb.unc(env.name, "src"), username=env.smb.username,
                                 password=env.smb.password, port=env.smb.port, cache_dir=env.cache)
    repo = Repository(env.store, STAMP, cache_dir=env.cache)
    result = Sync(settings, repo, source).run("hard", STAMP, "hard", None)
    commit(repo, result)
    assert not result.manifest.partial and not result.manifest.skipped
    code, out = restore(env, "hard", capsys, "restored")
    # Then it exits 0, and the restored tree equals the source: every path (the empty directories too), every
    # file's content hash and mtime, and (over SMB) every entry's size, mtime and DOS attributes
    assert code == 0, out
    assert picture(env.root / "restored") == picture(env.root / "src")
    after = listing(tree(env, "restored"))
    assert after == before
    assert sum(1 for p in after if p.startswith("empties/")) == 200
    assert max(len(p) for p in after) >= 660 and any(len(p.rpartition("/")[2]) == 255 for p in after)
    # And a second restore over it finds every file identical, writes nothing and exits 0
    code, out = restore(env, "hard", capsys, "restored")
    files = sum(1 for e in result.manifest.files())
    assert code == 0 and "0 files written" in out and f"{files} already identical" in out, out
    assert listing(tree(env, "restored")) == before
