"""File-share sync vs ``rclone sync``, Samba share → S3 test server: ``python tests/benchmarks/bench_fileshare.py``.

Starts its own smbd and moto S3 server (root needed, like the tests). Cases: (a) FILES files of 4–64 KiB,
(b) BIG files of BIG_MIB MiB, (c) re-sync with nothing changed, (d) re-sync after changing 1% of the small
files. Ours runs as configured in production: SMB 3 encryption, zstd, AES-GCM with a certificate. rclone runs
with its default flags (plus ``--s3-no-head`` for moto; ``AWS_CA_BUNDLE`` unset, see DESIGN.md). Sizes
via environment: BENCH_FILES (10000), BENCH_BIG (20), BENCH_BIG_MIB (100).
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fixtures.s3server import moto_s3_server  # noqa: E402
from tests.fixtures.smbd import smbd_server  # noqa: E402
from workers.artifacts.service import ArtifactStore  # noqa: E402
from workers.fileshare.handler import commit  # noqa: E402
from workers.fileshare.repo import Repository  # noqa: E402
from workers.fileshare.settings import FileshareSettings  # noqa: E402
from workers.fileshare.sync import Sync  # noqa: E402
from workers.fileshare.tree import open_tree  # noqa: E402
from workers.storage.artifact import generate_self_signed, load_certificate  # noqa: E402
from workers.storage.s3 import S3Store  # noqa: E402

MiB = 1 << 20
FILES, BIG, BIG_MIB = (int(os.environ.get(k, d)) for k, d in (("BENCH_FILES", 10000), ("BENCH_BIG", 20),
                                                               ("BENCH_BIG_MIB", 100)))


def populate(root: Path, owner: str, small: bool) -> tuple[int, int]:
    rnd, total, count = random.Random(5), 0, 0
    if small:
        for i in range(FILES):
            path = root / f"d{i % 100:02d}" / f"f{i:05d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            size = rnd.randint(4 * 1024, 64 * 1024)
            path.write_bytes(rnd.randbytes(size))
            total, count = total + size, count + 1
    else:
        root.mkdir(parents=True, exist_ok=True)
        for i in range(BIG):
            with open(root / f"big{i:02d}.bin", "wb") as fh:
                for _ in range(BIG_MIB):
                    fh.write(os.urandom(MiB))
            total, count = total + BIG_MIB * MiB, count + 1
    subprocess.run(["chown", "-R", owner, str(root)], check=True)
    return count, total


def change_one_percent(root: Path, owner: str) -> tuple[int, int]:
    files = sorted(root.rglob("*.bin"))[::100]
    for path in files:
        path.write_bytes(os.urandom(path.stat().st_size))
        shutil.chown(path, owner)
    return len(files), sum(p.stat().st_size for p in files)


def rclone(smb, s3, folder: str, bucket: str) -> float:
    obscured = subprocess.run(["rclone", "obscure", smb.password], capture_output=True, text=True, check=True)
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update({"RCLONE_CONFIG_SRC_TYPE": "smb", "RCLONE_CONFIG_SRC_HOST": smb.host,
                "RCLONE_CONFIG_SRC_PORT": str(smb.port), "RCLONE_CONFIG_SRC_USER": smb.username,
                "RCLONE_CONFIG_SRC_PASS": obscured.stdout.strip(), "RCLONE_CONFIG_DST_TYPE": "s3",
                "RCLONE_CONFIG_DST_PROVIDER": "Other", "RCLONE_CONFIG_DST_ENDPOINT": s3.url,
                "RCLONE_CONFIG_DST_ACCESS_KEY_ID": s3.access_key, "RCLONE_CONFIG_DST_SECRET_ACCESS_KEY": s3.secret_key,
                "RCLONE_CONFIG_DST_REGION": s3.region})
    started = time.monotonic()
    subprocess.run(["rclone", "sync", f"src:{smb.share}/{folder}", f"dst:{bucket}/{folder}", "--s3-no-head"],
                   env=env, check=True, capture_output=True)
    return time.monotonic() - started


def ours(smb, s3, folder: str, bucket: str, cert, cache: Path, sid: str) -> tuple[float, dict]:
    store = ArtifactStore(S3Store(s3.endpoint, s3.access_key, s3.secret_key, bucket, secure=False), certificate=cert)
    unc = smb.unc(folder)
    settings = FileshareSettings(source=unc, username=smb.username, password=smb.password, port=smb.port,
                                 cache_dir=cache)
    started = time.monotonic()
    repo = Repository(store, "bench", cache_dir=cache)
    result = Sync(settings, repo, open_tree(unc, username=smb.username, password=smb.password, port=smb.port)) \
        .run(sid, "bench", sid, None)
    commit(repo, result)
    return time.monotonic() - started, result.stats


def row(case: str, tool: str, seconds: float, files: int, nbytes: int, ref: float | None) -> str:
    ratio = f"{ref / seconds:5.2f}x" if ref else "   - "
    return (f"| {case:30} | {tool:9} | {seconds:8.2f} | {files / seconds:9.1f} | {nbytes / MiB / seconds:8.1f} "
            f"| {ratio} |")


def main() -> None:
    cert = load_certificate(generate_self_signed("bench", 1)[0])
    rows = ["| case | tool | seconds | files/s | MiB/s | speed vs rclone |", "|---|---|---|---|---|---|"]
    with smbd_server() as smb, moto_s3_server() as s3:
        cache = Path(f"/tmp/bench-fileshare-cache-{uuid.uuid4().hex[:6]}")
        count, total = populate(smb.path / "small", smb.username, True)
        r = rclone(smb, s3, "small", "rclone-small")
        o, _ = ours(smb, s3, "small", "ours-small", cert, cache, "a")
        rows += [row(f"(a) {count} files 4-64 KiB", "rclone", r, count, total, None),
                 row(f"(a) {count} files 4-64 KiB", "appsvc-dr", o, count, total, r)]
        r = rclone(smb, s3, "small", "rclone-small")
        o, _ = ours(smb, s3, "small", "ours-small", cert, cache, "c")
        rows += [row("(c) re-sync, nothing changed", "rclone", r, count, total, None),
                 row("(c) re-sync, nothing changed", "appsvc-dr", o, count, total, r)]
        changed, nbytes = change_one_percent(smb.path / "small", smb.username)
        r = rclone(smb, s3, "small", "rclone-small")
        o, stats = ours(smb, s3, "small", "ours-small", cert, cache, "d")
        rows += [row(f"(d) re-sync, {changed} files changed", "rclone", r, changed, nbytes, None),
                 row(f"(d) re-sync, {changed} files changed", "appsvc-dr", o, changed, nbytes, r)]
        s3.reset()
        shutil.rmtree(smb.path / "small")
        count, total = populate(smb.path / "big", smb.username, False)
        r = rclone(smb, s3, "big", "rclone-big")
        s3.reset()
        o, _ = ours(smb, s3, "big", "ours-big", cert, cache, "b")
        rows += [row(f"(b) {count} x {BIG_MIB} MiB", "rclone", r, count, total, None),
                 row(f"(b) {count} x {BIG_MIB} MiB", "appsvc-dr", o, count, total, r)]
        shutil.rmtree(cache, ignore_errors=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
