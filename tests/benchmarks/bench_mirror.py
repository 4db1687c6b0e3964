"""Mirror throughput and memory against rclone: ``python tests/benchmarks/bench_mirror.py [--size-mib 2048]
[--repeat 2]``. Not collected by pytest; needs moto[server] and rclone.

Two moto S3 servers (separate processes) play the primary and the secondary site. The primary holds one backup
set: a plan, a marker and one incompressible artifact of ``--size-mib`` stored as the workers store it (with its
signed-less record). Each variant copies ``stamp1/`` from the primary to an emptied secondary:

- ``(a) ours mirror``: ``workers.mirror.sync.sync`` in a child process (listing both sides, streaming each object
  with its record checked on the fly; an object whose record gives its size and SHA-256 goes up as one PUT
  streamed from the primary's GET, signed with that SHA-256);
- ``(b) rclone copy``: ``rclone copy src:bench/stamp1 dst:bench/stamp1 --s3-no-head`` (s3 backend, provider
  Other, otherwise defaults: multipart above 200 MiB in 5 MiB parts, 4 at once, MD5 of the source as metadata).

Why ``--s3-no-head``: moto answers CompleteMultipartUpload on an unversioned bucket with ``x-amz-version-id:
null`` (its other answers leave the header out there, as S3 does); rclone then reads the new object back with
``HEAD ...?versionId=null``, which moto refuses with a bare 400 (a versionId on an unversioned bucket), so its
first attempt failed and the retry (a new listing) found the object in place. S3 sends no version id for an
unversioned bucket, so there rclone's HEAD has none and succeeds; the
flag only skips that one request per uploaded object, so rclone's first attempt succeeds; with ``--retries 1`` a
failed attempt fails the benchmark rather than being timed.

Seconds are the child's wall time (our child measures around ``sync`` and reports it; rclone's is the
process's); peak RSS is the child's VmHWM, polled. CPU seconds per GiB, per run: the copier (its rusage) and each
moto server (``/proc/PID/stat`` before and after): on the 2 shared cores the servers do most of the work, so the
request pattern matters as much as the copier. The secondary is reset (``POST /moto-api/reset``) before every run.
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.bench_upload import Row  # noqa: E402
from tests.benchmarks.procs import pid_cpu_seconds, run, vm_hwm_mib  # noqa: E402

MiB = 1 << 20
BUCKET, STAMP = "bench", "stamp1"
TARGET_VS_RCLONE, TARGET_RSS_MIB = 0.9, 200
# --s3-no-head: see the docstring; --retries 1: a failed first attempt fails the benchmark instead of being timed
RCLONE_FLAGS = ["--s3-no-head", "--retries", "1"]


def child_main(argv: list[str]) -> None:
    """``--child SRC DST``: one mirror sync of the stamp; prints {"seconds", "copied", "peak_rss_mib"}. The key
    pair comes in BENCH_S3_KEYS (not from tests.fixtures: the copier's CPU would include importing pytest)."""
    from datetime import timedelta

    from workers.mirror.sync import Policy, sync
    from workers.storage.s3 import S3Store

    access, secret = os.environ["BENCH_S3_KEYS"].split(":", 1)
    src, dst = (S3Store(endpoint, access, secret, BUCKET, secure=False) for endpoint in argv)
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


@dataclass
class Cpu:
    """CPU seconds per GiB of one run: the copying process, and each moto server (the same servers for both
    variants; under saturation of the 2 cores, wall time follows the sum)."""
    copier: float
    source: float
    target: float

    @property
    def total(self) -> float:
        return self.copier + self.source + self.target


CPU: dict[str, list[Cpu]] = {}          # variant -> each run's CPU


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (the copier; the moto servers are still running)."""
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def _measured(variant: str, src, dst, mib: float, argv: list[str], env: dict[str, str] | None = None):
    """Run one copier: (wall seconds, peak RSS MiB, stdout), its CPU and the servers' recorded per GiB."""
    before = (_children_cpu(), pid_cpu_seconds(src.process.pid), pid_cpu_seconds(dst.process.pid))
    seconds, rss, _, out = run(argv, env)
    after = (_children_cpu(), pid_cpu_seconds(src.process.pid), pid_cpu_seconds(dst.process.pid))
    gib = mib / 1024
    CPU.setdefault(variant, []).append(Cpu(*((b - a) / gib for a, b in zip(before, after))))
    return seconds, rss, out


def ours(src, dst, mib: float) -> Row:
    from tests.fixtures.s3server import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
    dst.reset()
    env = {**os.environ, "BENCH_S3_KEYS": f"{DEFAULT_ACCESS_KEY}:{DEFAULT_SECRET_KEY}"}
    _, rss, out = _measured("(a) ours mirror", src, dst, mib,
                            [sys.executable, __file__, "--child", src.endpoint, dst.endpoint], env)
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
    seconds, rss, _ = _measured("(b) rclone copy", src, dst, mib,
                                ["rclone", "copy", f"src:{BUCKET}/{STAMP}", f"dst:{BUCKET}/{STAMP}", "-q",
                                 *RCLONE_FLAGS], env)
    return Row("(b) rclone copy", mib, seconds, rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=2)
    ns = parser.parse_args()
    from tests.fixtures.s3server import moto_s3_server
    loads = [os.getloadavg()[0]]
    with moto_s3_server() as src, moto_s3_server() as dst:
        fill_primary(src, ns.size_mib)
        rows: dict[str, list[Row]] = {}
        for _ in range(ns.repeat):
            for variant in (ours, rclone):
                row = variant(src, dst, ns.size_mib)
                rows.setdefault(row.variant, []).append(row)
                loads.append(os.getloadavg()[0])
    best = {name: min(found, key=lambda r: r.seconds) for name, found in rows.items()}
    print(f"{'variant':20} {'MiB':>6} {'seconds':>8} {'MiB/s':>7} {'peak RSS MiB':>13}   CPU-s per GiB, best run: "
          "copier + source moto + target moto = total")
    for name, row in best.items():
        cpu = CPU[name][rows[name].index(row)]
        print(f"{row.variant:20} {row.mib:>6.0f} {row.seconds:>8.2f} {row.rate:>7.1f} {row.rss_mib:>13.0f}   "
              f"{cpu.copier:.1f} + {cpu.source:.1f} + {cpu.target:.1f} = {cpu.total:.1f}")
    for name, runs in CPU.items():
        print(f"{name:20} every run (copier / source / target CPU-s per GiB): "
              + "; ".join(f"{c.copier:.1f} / {c.source:.1f} / {c.target:.1f}" for c in runs))
    a, b = best["(a) ours mirror"], best["(b) rclone copy"]
    print(f"(a) vs (b): {a.rate / b.rate:.2f}x (target >= {TARGET_VS_RCLONE}x); (a) peak RSS {a.rss_mib:.0f} MiB "
          f"(target <= {TARGET_RSS_MIB}); load average (1 min) during the runs "
          f"{min(loads):.1f}-{max(loads):.1f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child_main(sys.argv[2:])
    else:
        main()
