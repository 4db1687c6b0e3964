"""Backing up a Function Apps storage account: ``python tests/benchmarks/bench_functions.py [--blobs 10000]
[--size 2048] [--workdir DIR]``. Not collected by pytest; needs Azurite (``bash deploy/setup.sh``).

One Azurite (in memory, on loopback) holds ``--blobs`` small blobs (``--size`` bytes each, with metadata and a
content type) in one container, uploaded once. Then, in the same run:

- ``(a) plain SDK loop``: list the container and ``download_blob().readall()`` every blob into a file, one after
  the other: what a script (or an azcopy-like tool without parallelism; azcopy itself is not available here)
  does;
- ``(b) ours, first run``: ``backup_account`` into a local store (zstd, AES-GCM with a generated certificate):
  every blob downloaded (``downloads`` at once) and packed, manifest and index written;
- ``(c) ours, no change``: the same account again: nothing downloaded (every ETag known), manifest rewritten.

Ratios: (b) vs (a) (target >= 2x) and (c) vs (b). Seconds are wall time around each variant in this process.

On loopback both variants are CPU-bound (the SDK's per-request Python and Azurite's Node each cost about as much
as the other), so parallel downloads can at best overlap the two. ``--latency-ms N`` puts a proxy (its own
process) in front of the blob service that delays every request by N ms, as a storage account across a network
does, for both variants alike.

Azurite's in-memory (LokiJS) metadata store finds a blob by scanning every blob of the account (its index serves
only the first field of the query, the account name), so each blob request costs it time in proportion to the
account's size (docs/performance.md). ``--metadata-db mysql://root@127.0.0.1:3306/azurite_bench`` runs Azurite
with its supported SQL metadata store instead (``AZURITE_DB``; the database is dropped and created; blob
contents in files), for both variants alike; the database server's CPU is then reported too (``--db-pid``,
default: the running ``mariadbd`` / ``mysqld``, which other jobs may share).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TARGET_VS_LOOP = 2.0


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Counter:
    """Counts the HTTP responses a client's pipeline sees (the SDK's public ``raw_response_hook``)."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, response) -> None:
        self.n += 1


@contextlib.contextmanager
def measured(row: dict, azurite_pid: int, db_pid: int | None):
    """Wall, our CPU, Azurite's and the metadata database's CPU seconds around a variant, into ``row``."""
    a0, o0, t0 = process_cpu(azurite_pid), own_cpu(), time.perf_counter()
    d0 = process_cpu(db_pid) if db_pid else 0.0
    yield
    row.update(seconds=time.perf_counter() - t0, ours_cpu=own_cpu() - o0, azurite_cpu=process_cpu(azurite_pid) - a0,
               db_cpu=(process_cpu(db_pid) - d0) if db_pid else 0.0)


def fresh_database(url: str) -> None:
    """Drop and create the database of a ``mysql://user[:password]@host:port/name`` URL (mysql client)."""
    u = urlsplit(url)
    name = u.path.strip("/")
    if not name.replace("_", "").isalnum():
        raise SystemExit(f"--metadata-db: the database name must be letters, digits and _: {name!r}")
    env = {**os.environ, "MYSQL_PWD": u.password or ""}
    subprocess.run(["mysql", "-h", u.hostname or "127.0.0.1", "-P", str(u.port or 3306), "-u", u.username or "root",
                    "-e", f"DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"], check=True, env=env)


def database_pid() -> int | None:
    for name in ("mariadbd", "mysqld"):
        found = subprocess.run(["pgrep", "-xo", name], capture_output=True, text=True).stdout.split()
        if found:
            return int(found[0])
    return None


def populate(cs: str, container: str, count: int, size: int) -> None:
    from azure.storage.blob import BlobServiceClient, ContentSettings
    client = BlobServiceClient.from_connection_string(cs).create_container(container)
    body = bytes(range(256)) * (size // 256 + 1)

    def one(i: int) -> None:
        client.upload_blob(f"hosts/locks/func{i:05d}", body[i % 256:i % 256 + size], metadata={"i": str(i)},
                           content_settings=ContentSettings(content_type="application/json"))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(count)))


def plain_loop(cs: str, container: str, out: Path, counter: Counter) -> int:
    from azure.storage.blob import BlobServiceClient
    client = BlobServiceClient.from_connection_string(cs, raw_response_hook=counter).get_container_client(container)
    n = 0
    for props in client.list_blobs(include=["metadata"]):
        data = client.get_blob_client(props.name).download_blob().readall()
        (out / f"{n:06d}").write_bytes(data)
        n += 1
    return n


def ours(cs: str, store_dir: Path, cert: Path, set_id: str, counter: Counter) -> dict:
    from workers.artifacts.service import ArtifactStore
    from workers.functions.backup import backup_account
    from workers.functions.settings import FunctionsSettings
    from workers.storage.codec import load_certificate
    from workers.storage.local import LocalStore
    settings = FunctionsSettings(accounts=[{"name": "source", "connection_string": cs}])
    backend = LocalStore(store_dir)
    store = ArtifactStore(backend, certificate=load_certificate(cert))
    meta = ArtifactStore(backend, certificate=None)
    return backup_account(settings, store, meta, settings.accounts[0], "stamp1", set_id, response_hook=counter)


@contextlib.contextmanager
def delayed(az, latency_ms: float):
    """The source connection string, its blob service behind a delaying proxy process when asked."""
    if not latency_ms:
        yield az.connection_string("source")
        return
    proc = subprocess.Popen([sys.executable, "-m", "tests.fixtures.storage_proxy", "--upstream", str(az.blob_port),
                             "--delay-ms", str(latency_ms)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        port = int(proc.stdout.readline())
        yield az.connection_string("source", ports=(port, az.queue_port, az.table_port))
    finally:
        proc.terminate()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--workdir")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay added to each blob request")
    parser.add_argument("--metadata-db", help="Azurite's SQL metadata store (AZURITE_DB), e.g. "
                        "mysql://root@127.0.0.1:3306/azurite_bench; default: in memory")
    parser.add_argument("--db-pid", type=int, help="the database server's process (CPU column)")
    ns = parser.parse_args()
    from tests.fixtures.azurite import azurite_server
    from tests.unit.certs import make_cert
    db_pid = None
    if ns.metadata_db:
        fresh_database(ns.metadata_db)
        db_pid = ns.db_pid or database_pid()
    with azurite_server(metadata_db=ns.metadata_db) as az, tempfile.TemporaryDirectory(dir=ns.workdir) as work:
        work_dir = Path(work)
        cert = work_dir / "cert.pem"
        cert.write_bytes(make_cert("bench-functions", 3072).cert_pem)
        t0 = time.perf_counter()
        populate(az.connection_string("source"), "bench", ns.blobs, ns.size)
        print(f"uploaded {ns.blobs} blobs of {ns.size} B in {time.perf_counter() - t0:.1f}s")
        (work_dir / "loop").mkdir()
        rows = {k: {} for k in ("(a) plain SDK loop", "(b) ours, first run", "(c) ours, no change")}
        counters = {k: Counter() for k in rows}
        (a, b, c) = rows
        with delayed(az, ns.latency_ms) as cs:
            with measured(rows[a], az.process.pid, db_pid):
                loop_n = plain_loop(cs, "bench", work_dir / "loop", counters[a])
            with measured(rows[b], az.process.pid, db_pid):
                first = ours(cs, work_dir / "store", cert, "20261203T010000Z-00000001", counters[b])
            with measured(rows[c], az.process.pid, db_pid):
                again = ours(cs, work_dir / "store", cert, "20261203T020000Z-00000002", counters[c])
    assert loop_n == first["blobs"] == again["blobs"] == ns.blobs
    assert first["blobs_read"] == ns.blobs and again["blobs_read"] == 0
    rows[a]["read"], rows[b]["read"], rows[c]["read"] = loop_n, first["blobs_read"], again["blobs_read"]
    store = f"SQL ({ns.metadata_db})" if ns.metadata_db else "in memory (LokiJS)"
    print(f"\nadded latency per blob request: {ns.latency_ms:g} ms; Azurite metadata: {store}; "
          f"load average {os.getloadavg()[0]:.1f}")
    db_head = f" {'DB CPU-s':>9}" if db_pid else ""
    print(f"{'variant':24} {'seconds':>8} {'blobs/s':>8} {'read':>6} {'requests':>9} {'our CPU-s':>10} "
          f"{'Azurite CPU-s':>14}{db_head} {'Azurite ms/req':>15} {'our ms/blob':>12}")
    for name, r in rows.items():
        n = max(counters[name].n, 1)
        db = f" {r['db_cpu']:9.2f}" if db_pid else ""
        per_blob = f"{1000 * r['ours_cpu'] / r['read']:.3f}" if r["read"] else "-"
        print(f"{name:24} {r['seconds']:8.2f} {ns.blobs / r['seconds']:8.0f} {r['read']:6d} {counters[name].n:9d} "
              f"{r['ours_cpu']:10.2f} {r['azurite_cpu']:14.2f}{db} {1000 * r['azurite_cpu'] / n:15.3f} "
              f"{per_blob:>12}")
    speedup, no_change = rows[a]["seconds"] / rows[b]["seconds"], rows[b]["seconds"] / rows[c]["seconds"]
    serial = rows[a]["ours_cpu"] + rows[a]["azurite_cpu"] + rows[a]["db_cpu"] + counters[a].n * ns.latency_ms / 1000
    bound = serial / rows[b]["azurite_cpu"]
    print(f"\n(b) vs (a): {speedup:.2f}x (target >= {TARGET_VS_LOOP}x); (c) vs (b): {no_change:.1f}x")
    db_part = " + DB CPU" if db_pid else ""
    print(f"ceiling on an idle machine while Azurite (one thread) serves every request: (a)'s serial work (our CPU "
          f"+ Azurite CPU{db_part} + added latency = {serial:.0f} s) / (b)'s Azurite CPU "
          f"({rows[b]['azurite_cpu']:.0f} s) = {bound:.2f}x")
    return 0 if speedup >= TARGET_VS_LOOP else 1


if __name__ == "__main__":
    sys.exit(main())
