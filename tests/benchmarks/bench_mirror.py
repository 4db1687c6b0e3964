"""Mirror throughput and memory against rclone: ``python tests/benchmarks/bench_mirror.py [--size-mib 2048]
[--repeat 2]``. Not collected by pytest; needs moto[server] and rclone.

Two moto S3 servers (separate processes) play the primary and the secondary site. The primary holds one backup
set: a plan, a marker and one incompressible artifact of ``--size-mib`` stored as the workers store it (with its
signed-less record). Each variant copies ``stamp1/`` from the primary to an emptied secondary:

- ``(a) ours mirror``: ``workers.mirror.sync.sync`` in a child process (listing both sides, streaming each object
  with its record checked on the fly, 16 MiB parts, SHA-256 sent with single-part uploads);
- ``(b) rclone copy``: ``rclone copy src:bench/stamp1 dst:bench/stamp1`` (s3 backend, provider Other, defaults).

Seconds are the child's wall time (our child measures around ``sync`` and reports it; rclone's is the process's;
against moto rclone's first attempt ends with a 400 after the upload and its retry finds the object there);
peak RSS is the child's VmHWM, polled. The secondary is reset (``POST /moto-api/reset``) before every run.
Targets (issue 18): (a) >= 0.9x (b) and a peak RSS <= 200 MiB.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.bench_upload import Row  # noqa: E402
from tests.benchmarks.procs import run, vm_hwm_mib  # noqa: E402

MiB = 1 << 20
BUCKET, STAMP = "bench", "stamp1"
TARGET_VS_RCLONE, TARGET_RSS_MIB = 0.9, 200


def child_main(argv: list[str]) -> None:
    """``--child SRC DST``: one mirror sync of the stamp; prints {"seconds", "copied", "peak_rss_mib"}."""
    from datetime import timedelta

    from tests.fixtures.s3server import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
    from workers.mirror.sync import Policy, sync
    from workers.storage.s3 import S3Store

    src, dst = (S3Store(endpoint, DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, BUCKET, secure=False) for endpoint in argv)
    started = time.perf_counter()
    result = sync(src, dst, STAMP, Policy(keep_last=7, keep_within=None, grace=timedelta(hours=6)))
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "copied": result.bytes_copied, "peak_rss_mib": vm_hwm_mib()}))


def fill_primary(server, size_mib: int) -> None:
    """One complete set: plan, the artifact (streamed from a generator, never whole in memory), its record, marker."""
    from contracts import new_backup_set_id
    from tests.fixtures.s3server import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
    from workers.artifacts.service import ArtifactStore
    from workers.artifacts.setmanifest import artifact_key
    from workers.artifacts.sets import Plan, write_marker, write_plan
    from workers.storage.s3 import S3Store
    from contracts import utcnow

    backend = S3Store(server.endpoint, DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, BUCKET, secure=False)
    set_id = new_backup_set_id()
    write_plan(backend, Plan(STAMP, set_id, ("databases",), "schedule", utcnow()))
    ArtifactStore(backend, compress=False).put(artifact_key(STAMP, set_id, "databases", "bench.bak"),
                                               lambda: _Random(size_mib * MiB))
    write_marker(backend, STAMP, set_id, {"completed_at": utcnow().isoformat()})
    backend.close()


class _Random:
    """A readable stream of ``size`` incompressible bytes (a context manager, as ArtifactStore.put opens it)."""

    def __init__(self, size: int) -> None:
        self.left, self.rng = size, random.Random(18)

    def __enter__(self) -> "_Random":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        self.left -= n
        return self.rng.randbytes(n)


CPU: dict[str, list[float]] = {}        # variant -> the copying process's CPU seconds per GiB, each run


def _cpu() -> float:
    """CPU seconds of this process's finished children (the copier; the moto servers are still running)."""
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def ours(src, dst, mib: float) -> Row:
    dst.reset()
    before = _cpu()
    _, rss, _, out = run([sys.executable, __file__, "--child", src.endpoint, dst.endpoint])
    CPU.setdefault("(a) ours mirror", []).append((_cpu() - before) / (mib / 1024))
    data = json.loads(out.strip().splitlines()[-1])
    return Row("(a) ours mirror", data["copied"] / MiB, data["seconds"], max(rss, data["peak_rss_mib"]))


def rclone(src, dst, mib: float) -> Row:
    from tests.fixtures.s3server import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
    dst.reset()
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    for name, server in (("SRC", src), ("DST", dst)):
        env.update({f"RCLONE_CONFIG_{name}_TYPE": "s3", f"RCLONE_CONFIG_{name}_PROVIDER": "Other",
                    f"RCLONE_CONFIG_{name}_ENDPOINT": server.url, f"RCLONE_CONFIG_{name}_REGION": "us-east-1",
                    f"RCLONE_CONFIG_{name}_ACCESS_KEY_ID": DEFAULT_ACCESS_KEY,
                    f"RCLONE_CONFIG_{name}_SECRET_ACCESS_KEY": DEFAULT_SECRET_KEY})
    before = _cpu()
    seconds, rss, _, _ = run(["rclone", "copy", f"src:{BUCKET}/{STAMP}", f"dst:{BUCKET}/{STAMP}", "-q"], env)
    CPU.setdefault("(b) rclone copy", []).append((_cpu() - before) / (mib / 1024))
    return Row("(b) rclone copy", mib, seconds, rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=2)
    ns = parser.parse_args()
    from tests.fixtures.s3server import moto_s3_server
    with moto_s3_server() as src, moto_s3_server() as dst:
        fill_primary(src, ns.size_mib)
        rows: dict[str, list[Row]] = {}
        for _ in range(ns.repeat):
            for variant in (ours, rclone):
                row = variant(src, dst, ns.size_mib)
                rows.setdefault(row.variant, []).append(row)
    best = {name: min(found, key=lambda r: r.seconds) for name, found in rows.items()}
    print(f"{'variant':20} {'MiB':>8} {'seconds':>8} {'MiB/s':>8} {'peak RSS MiB':>13}")
    for row in best.values():
        print(f"{row.variant:20} {row.mib:>8.0f} {row.seconds:>8.2f} {row.rate:>8.1f} {row.rss_mib:>13.0f}")
    for name, runs in CPU.items():
        print(f"{name:20} copier CPU s/GiB per run: {', '.join(f'{c:.1f}' for c in runs)} (steady under load; "
              "the moto servers' CPU is the same work for both and not counted)")
    a, b = best["(a) ours mirror"], best["(b) rclone copy"]
    print(f"(a) vs (b): {a.rate / b.rate:.2f}x (target >= {TARGET_VS_RCLONE}x); (a) peak RSS {a.rss_mib:.0f} MiB "
          f"(target <= {TARGET_RSS_MIB})")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child_main(sys.argv[2:])
    else:
        main()
