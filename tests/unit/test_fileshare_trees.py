"""Generated App Service-like trees for the file-share tests (helpers, imported by the other fileshare tests),
and a check that a tree's picture is what the restore tests compare."""
from __future__ import annotations

import hashlib
import os
import random
import shutil
from pathlib import Path

MiB = 1024 * 1024
BASE_NS = 1_760_000_000_000_000_000          # mtimes on whole microseconds: exact through SMB (100 ns units)


def write(root: Path, rel: str, data: bytes, mtime_ns: int | None = None, owner: str | None = None) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    if owner:
        shutil.chown(path, owner)


def make_tree(root: Path, *, seed: int = 7, big: int = 3 * MiB, owner: str | None = None) -> dict[str, int]:
    """Nested dirs, empty dirs, unicode names, zero-byte, small and multi-MB files. Returns file sizes."""
    rnd = random.Random(seed)
    files = {"site/wwwroot/index.html": b"<html>hello</html>", "site/wwwroot/zero.txt": b"",
             "site/wwwroot/café/naïve 文件 ✓.txt": "unicode ✓".encode(), "big/app.zip": rnd.randbytes(big),
             "LogFiles/2026/11/app.log": b"line\n" * 2000, "data/dup-a.bin": b"same bytes " * 500,
             "data/dup-b.bin": b"same bytes " * 500}
    for i in range(40):
        files[f"site/wwwroot/assets/{i // 10}/f{i}.js"] = rnd.randbytes(rnd.randint(1, 40_000))
    for i, (rel, data) in enumerate(sorted(files.items())):
        write(root, rel, data, BASE_NS + i * 1_000_000_000 + 123_456_000, owner)
    for empty in ("site/empty", "deep/a/b/c/empty"):
        (root / empty).mkdir(parents=True, exist_ok=True)
    if owner:
        for dirpath, dirnames, _ in os.walk(root):
            for name in dirnames:
                shutil.chown(os.path.join(dirpath, name), owner)
    return {rel: len(data) for rel, data in files.items()}


def change_tree(root: Path, owner: str | None = None) -> int:
    """Add, modify (small and in the middle of the big file), delete, rename. Returns the bytes of new
    content (added file + modified small file; the big file's change is a few bytes inside one chunk)."""
    added = random.Random(99).randbytes(200_000)
    write(root, "site/wwwroot/new/added.bin", added, BASE_NS + 500 * 1_000_000_000, owner)
    modified = b"<html>changed</html>"
    write(root, "site/wwwroot/index.html", modified, BASE_NS + 501 * 1_000_000_000, owner)
    big = root / "big/app.zip"
    data = bytearray(big.read_bytes())
    data[len(data) // 2:len(data) // 2 + 16] = b"X" * 16
    write(root, "big/app.zip", bytes(data), BASE_NS + 502 * 1_000_000_000, owner)
    (root / "LogFiles/2026/11/app.log").unlink()
    os.rename(root / "site/wwwroot/assets/0/f1.js", root / "site/wwwroot/assets/0/renamed.js")
    return len(added) + len(modified)


def picture(root: Path) -> dict[str, tuple]:
    """Every directory and file under ``root``: (kind, SHA-256, mtime in 100 ns units) — what must survive."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            out[rel] = ("dir",)
        for name in filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            out[rel] = ("file", hashlib.sha256(Path(path).read_bytes()).hexdigest(), os.stat(path).st_mtime_ns // 100)
    return out


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, copy_function=shutil.copy2)
    return dst


def test_picture_sees_empty_dirs_content_and_mtimes(tmp_path):
    # Given a generated tree and a copy of it
    make_tree(tmp_path / "a")
    copy_tree(tmp_path / "a", tmp_path / "b")
    # Then both pictures agree, including empty directories
    assert picture(tmp_path / "a") == picture(tmp_path / "b")
    assert picture(tmp_path / "a")["site/empty"] == ("dir",)
    # And a change of one mtime shows
    os.utime(tmp_path / "b/site/wwwroot/index.html", ns=(BASE_NS, BASE_NS))
    assert picture(tmp_path / "a") != picture(tmp_path / "b")
