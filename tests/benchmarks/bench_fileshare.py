"""File-share sync vs ``rclone sync``, Samba share → S3 test server: ``python tests/benchmarks/bench_fileshare.py``.

Starts its own smbd and moto S3 server (root needed, like the tests). Cases: (a) FILES files of 4–64 KiB,
(b) BIG files of BIG_MIB MiB, (c) re-sync with nothing changed, (d) re-sync after changing 1% of the small
files, (e) restore of the large files to a fresh folder of the share (``rclone copy`` back from its bucket),
(f) the same for FILES small files (4–64 KiB in 100 directories), (g) the same for a mixed tree (FILES / 5 small
files and BIG / 4 large ones in one folder, backed up together). Each row gives the tool's CPU seconds: ours
is the benchmark process's (the restore runs in it, with its writer processes when ``--writers`` asks), rclone's
its child process's; the restore rows (e), (f) and (g) add the CPU moto and smbd (its master and per-connection
processes) spent during each tool's run, and our restoring process's own.
Ours runs as configured in production: SMB 3 encryption, zstd, AES-GCM with a certificate. rclone runs
with its default flags (plus ``--s3-no-head`` for moto; ``AWS_CA_BUNDLE`` unset, see DESIGN.md); it sends plain
SMB unless the server requires encryption: ``--smb-encrypt`` makes the share require it, so both tools encrypt. Pick cases
and sizes with the options (``--help``; the environment's BENCH_FILES, BENCH_BIG, BENCH_BIG_MIB still set the
defaults); ``--repeat R`` runs (b) R times, rclone and ours alternately (each a fresh first sync), and
keeps each tool's best time, since a shared 2-core machine swings by a third between runs. Each of our rows
also reports our CPU seconds (the worker process and its reader processes), and
per GB read; each round of (b) also the CPU seconds per GB of moto and smbd. Our store is opened from settings
(region set), as the worker opens it; ``BENCH_FILESHARE_SETTINGS`` (JSON) overrides file-share settings for (b),
(m) and (n), e.g. ``{"reader_packing": true, "memory_budget": 159383552}``.

Memory cases (not timed against rclone): (m) a first sync of BIG files of BIG_MIB MiB and (n) of FILES small
files, each in a child process with default settings, sampled every 20 ms: the peak RSS of the worker process,
of each reader process, the peak of their sum (the process tree), and the worker's RSS before and after the job
(what a job leaves behind); (r) a restore of BIG files to a fresh folder, in a child process, once per
``--writers`` count (the writer processes are its descendants). The goal (issues 13, 17): <= 200 MiB per process,
<= 300 MiB for the tree.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from types import SimpleNamespace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fixtures.s3server import moto_s3_server  # noqa: E402
from tests.benchmarks.procs import descendants, tree_cpu_seconds, vm_hwm_mib  # noqa: E402
from tests.fixtures.smbd import smbd_server  # noqa: E402
from workers.artifacts.service import ArtifactStore  # noqa: E402
from workers.fileshare.handler import commit  # noqa: E402
from workers.fileshare.restore import Restorer  # noqa: E402
from workers.fileshare.settings import FileshareSettings  # noqa: E402
from workers.fileshare.sync import Sync  # noqa: E402
from workers.fileshare.opener import open_tree  # noqa: E402
from workers.repository.repo import Repository  # noqa: E402
from workers.storage.codec import KeyRing, generate_self_signed  # noqa: E402
from workers.storage.settings import EncryptionSettings, StoreSettings  # noqa: E402

MiB = 1 << 20
FILES, BIG, BIG_MIB = (int(os.environ.get(k, d)) for k, d in (("BENCH_FILES", 10000), ("BENCH_BIG", 20),
                                                               ("BENCH_BIG_MIB", 100)))


def populate(root: Path, owner: str, small: bool, files: int, big_mib: int = BIG_MIB) -> tuple[int, int]:
    """``files`` small files of 4-64 KiB, or ``files`` large ones of ``big_mib`` MiB (random: incompressible)."""
    rnd, total, count = random.Random(5), 0, 0
    if small:
        for i in range(files):
            path = root / f"d{i % 100:02d}" / f"f{i:05d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            size = rnd.randint(4 * 1024, 64 * 1024)
            path.write_bytes(rnd.randbytes(size))
            total, count = total + size, count + 1
    else:
        root.mkdir(parents=True, exist_ok=True)
        for i in range(files):
            with open(root / f"big{i:02d}.bin", "wb") as fh:
                for _ in range(big_mib):
                    fh.write(os.urandom(MiB))
            total, count = total + big_mib * MiB, count + 1
    subprocess.run(["chown", "-R", owner, str(root)], check=True)
    return count, total


def change_one_percent(root: Path, owner: str) -> tuple[int, int]:
    files = sorted(root.rglob("*.bin"))[::100]
    for path in files:
        path.write_bytes(os.urandom(path.stat().st_size))
        shutil.chown(path, owner)
    return len(files), sum(p.stat().st_size for p in files)


def rclone(smb, s3, folder: str, bucket: str) -> float:
    started = time.monotonic()
    subprocess.run(["rclone", "sync", f"src:{smb.share}/{folder}", f"dst:{bucket}/{folder}", "--s3-no-head"],
                   env=rclone_env(smb, s3), check=True, capture_output=True)
    return time.monotonic() - started


def rclone_env(smb, s3) -> dict[str, str]:
    """rclone's remotes: ``src`` the Samba share, ``dst`` the S3 server."""
    obscured = subprocess.run(["rclone", "obscure", smb.password], capture_output=True, text=True, check=True)
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update({"RCLONE_CONFIG_SRC_TYPE": "smb", "RCLONE_CONFIG_SRC_HOST": smb.host,
                "RCLONE_CONFIG_SRC_PORT": str(smb.port), "RCLONE_CONFIG_SRC_USER": smb.username,
                "RCLONE_CONFIG_SRC_PASS": obscured.stdout.strip(), "RCLONE_CONFIG_DST_TYPE": "s3",
                "RCLONE_CONFIG_DST_PROVIDER": "Other", "RCLONE_CONFIG_DST_ENDPOINT": s3.url,
                "RCLONE_CONFIG_DST_ACCESS_KEY_ID": s3.access_key, "RCLONE_CONFIG_DST_SECRET_ACCESS_KEY": s3.secret_key,
                "RCLONE_CONFIG_DST_REGION": s3.region})
    return env


def cpu_seconds(*who: int) -> float:
    """CPU time of this process and of its finished children (our reader processes; rclone is done by then)."""
    return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, who or (resource.RUSAGE_SELF,
                                                                                 resource.RUSAGE_CHILDREN)))


def servers_cpu(smb, s3) -> tuple[float, float]:
    """CPU seconds used so far by the S3 server (moto) and by smbd (its parent and connection processes)."""
    smbd = sum(tree_cpu_seconds(int(p.read_text().strip())) for p in (smb.conf.parent / "pid").glob("smbd*.pid"))
    return tree_cpu_seconds(s3.process.pid), smbd


def timed(smb, s3, run) -> tuple[float, dict]:
    """``run()`` -> (seconds, stats); the stats gain the CPU seconds moto and smbd spent meanwhile."""
    before = servers_cpu(smb, s3)
    seconds, stats = run()
    after = servers_cpu(smb, s3)
    return seconds, dict(stats, moto_cpu=after[0] - before[0], smbd_cpu=after[1] - before[1])


def bench_store(s3, bucket: str, cert_pem: bytes, cache: Path) -> ArtifactStore:
    """The bucket as the worker opens its store (from settings: its reader processes can open it again)."""
    cache.mkdir(parents=True, exist_ok=True)
    cert_file = cache / "bench-cert.pem"
    cert_file.write_bytes(cert_pem)
    store = ArtifactStore.from_settings(
        StoreSettings(kind="s3", s3_endpoint=s3.endpoint, s3_access_key=s3.access_key, s3_secret_key=s3.secret_key,
                      s3_bucket=bucket, s3_region=s3.region, s3_secure=False),
        EncryptionSettings(certificate=cert_file))
    return store


def ours(smb, s3, folder: str, bucket: str, cert, cache: Path, sid: str) -> tuple[float, dict]:
    store = bench_store(s3, bucket, cert, cache)
    unc = smb.unc(folder)
    settings = FileshareSettings(source=unc, username=smb.username, password=smb.password, port=smb.port,
                                 cache_dir=cache, **json.loads(os.environ.get("BENCH_FILESHARE_SETTINGS", "{}")))
    started, cpu, own = time.monotonic(), cpu_seconds(), cpu_seconds(resource.RUSAGE_SELF)
    repo = Repository(store, "bench", cache_dir=cache)
    result = Sync(settings, repo, open_tree(unc, username=smb.username, password=smb.password, port=smb.port)) \
        .run(sid, "bench", sid, None)
    commit(repo, result)
    return time.monotonic() - started, dict(result.stats.as_dict(), cpu_seconds=cpu_seconds() - cpu,
                                            worker_cpu=cpu_seconds(resource.RUSAGE_SELF) - own)


def row(case: str, tool: str, seconds: float, files: int, nbytes: int, ref: float | None,
        stats: dict | None = None) -> str:
    ratio = f"{ref / seconds:5.2f}x" if ref else "   - "
    cpu = "-" if not stats else f"{stats['cpu_seconds']:.1f}" + \
        (f" ({stats['cpu_seconds'] / (stats['bytes_read'] / 1e9):.2f}/GB)" if stats["bytes_read"] else "")
    if stats and "servers" in stats:
        gb = stats["bytes_read"] / 1e9
        cpu += "; " + ", ".join(f"{name} {sec:.1f} ({sec / gb:.2f}/GB)" for name, sec in stats["servers"].items())
    return (f"| {case:30} | {tool:9} | {seconds:8.2f} | {files / seconds:9.1f} | {nbytes / MiB / seconds:8.1f} "
            f"| {ratio} | {cpu:>16} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="acdbef", help="which cases to run, e.g. 'b' or 'acd' (default acdbef; g: a mixed tree's restore; c "
                        "and d re-sync the tree case a stored; e restores the large files to a fresh folder, f the "
                        "small files; m, n, r: memory of a sync of the large and the small files, and of a restore)")
    parser.add_argument("--files", type=int, default=FILES, help="small files in (a) (default %(default)s)")
    parser.add_argument("--big", type=int, default=BIG, help="large files in (b) (default %(default)s)")
    parser.add_argument("--big-mib", type=int, default=BIG_MIB, help="MiB per large file (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of (b), (e) and (f), rclone and ours "
                        "alternately, each a fresh first sync or a restore to a fresh folder; the best time of each "
                        "tool counts (default %(default)s)")
    parser.add_argument("--smb-encrypt", action="store_true", help="the share requires SMB 3 encryption "
                        "(`server smb encrypt = required`), so rclone's writes and reads are encrypted too, as ours "
                        "always are (without it rclone sends plain SMB)")
    parser.add_argument("--writers", default="0", help="(e), (f), (r): comma-separated writer-process counts of "
                        "our restore to run each round (0: written in the restoring process), e.g. 0,2; a "
                        "trailing f restores file by file (no large file streamed pack by pack), e.g. 0,0f "
                        "(default %(default)s: the product's default)")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)   # internal: see memory_child
    args = parser.parse_args()
    if args.memory_child:
        return memory_child(os.environ.pop("BENCH_MEMORY_SPEC"))
    if set(args.cases) & {"c", "d"} and "a" not in args.cases:
        parser.error("cases c and d re-sync the tree case a stored: include a")
    cert_pem, key_pem = generate_self_signed("bench", 1)
    cert = cert_pem                 # ours() opens its store from settings, with this certificate (PEM)
    rows = ["| case | tool | seconds | files/s | MiB/s | speed vs rclone | CPU s (per GB): the tool's own; restores: "
            "+ the servers' during its run |",
            "|---|---|---|---|---|---|---|"]
    with smbd_server(encrypt=args.smb_encrypt) as smb, moto_s3_server() as s3:
        cache = Path(f"/tmp/bench-fileshare-cache-{uuid.uuid4().hex[:6]}")
        if "a" in args.cases:
            rows += small_cases(smb, s3, cert, cache, args)
        if "b" in args.cases:
            rows += big_case(smb, s3, cert, cache, args)
        if "e" in args.cases:
            rows += restore_case(smb, s3, cert, key_pem, cache, args)
        if "f" in args.cases:
            rows += restore_case(smb, s3, cert, key_pem, cache, args, small=True)
        if "g" in args.cases:
            rows += restore_case(smb, s3, cert, key_pem, cache, args, mixed=True)
        if set(args.cases) & {"m", "n", "r"}:
            rows += ["", *memory_cases(smb, s3, cert_pem, key_pem, cache, args)]
        shutil.rmtree(cache, ignore_errors=True)
    print(f"SMB encryption: {'required by the share (both tools encrypt)' if args.smb_encrypt else 'ours only'}; "
          f"load average at the end {os.getloadavg()[0]:.1f}")
    print("\n".join(rows))


def big_case(smb, s3, cert, cache: Path, args: argparse.Namespace) -> list[str]:
    """(b): rclone and a fresh sync of ours, alternately ``--repeat`` times; the best time of each counts."""
    count, total = populate(smb.path / "big", smb.username, False, args.big, args.big_mib)
    best_r, best_o = (float("inf"), {}), (float("inf"), {})
    servers = []
    for rep in range(args.repeat):
        r = timed(smb, s3, lambda: rclone_cpu(smb, s3, "big", f"rclone-big-{rep}", total))
        best_r = min(best_r, r, key=lambda result: result[0])
        s3.reset()
        o = timed(smb, s3, lambda: ours(smb, s3, "big", f"ours-big-{rep}", cert, cache / f"b{rep}", f"b{rep}"))
        best_o = min(best_o, o, key=lambda result: result[0])
        s3.reset()
        servers += [server_row(f"(b) round {rep + 1}", "rclone", r, total),
                    server_row(f"(b) round {rep + 1}", "appsvc-dr", o, total)]
        print(servers[-2], servers[-1], f"load {os.getloadavg()[0]:.1f}", flush=True)
    label = f"(b) {count} x {args.big_mib} MiB" + (f", best of {args.repeat}" if args.repeat > 1 else "")
    return [row(label, "rclone", best_r[0], count, total, None, best_r[1]),
            row(label, "appsvc-dr", best_o[0], count, total, best_r[0], best_o[1]), "",
            "| round | tool | seconds | tool CPU s/GB | moto CPU s/GB | smbd CPU s/GB | total CPU s/GB |",
            "|---|---|---|---|---|---|---|", *servers]


def rclone_cpu(smb, s3, folder: str, bucket: str, nbytes: int) -> tuple[float, dict]:
    """``rclone`` with its CPU seconds (a finished child's)."""
    cpu = cpu_seconds()
    seconds = rclone(smb, s3, folder, bucket)
    return seconds, {"cpu_seconds": cpu_seconds() - cpu, "bytes_read": nbytes}


def server_row(label: str, tool: str, result: tuple[float, dict], nbytes: int) -> str:
    seconds, stats = result
    gb = nbytes / 1e9
    own, moto, smbd = stats["cpu_seconds"], stats["moto_cpu"], stats["smbd_cpu"]
    worker = f" (worker process {stats['worker_cpu'] / gb:.2f})" if "worker_cpu" in stats else ""
    return (f"| {label} | {tool} | {seconds:.2f} | {own / gb:.2f}{worker} | {moto / gb:.2f} | {smbd / gb:.2f} "
            f"| {(own + moto + smbd) / gb:.2f} |")


def restore_case(smb, s3, cert, key_pem: bytes, cache: Path, args: argparse.Namespace,
                 small: bool = False, mixed: bool = False) -> list[str]:
    """(e): the large files, (f): FILES small files, or (g): a mixed tree (FILES / 5 small files and BIG / 4 large
    ones, backed up together: their chunks share packs), stored by each tool, restored to a fresh folder of the
    share: ``rclone copy`` from its bucket, ours a snapshot restore (decrypt, verify every blob, set mtimes and
    attributes, verify the result). Both results are compared with the source, file by file."""
    folder, case = ("small-r", "f") if small else ("mixed-r", "g") if mixed else ("big", "e")
    if mixed:
        small_count, small_total = populate(smb.path / folder, smb.username, True, max(1, args.files // 5))
        big_count, big_total = populate(smb.path / folder, smb.username, False, max(1, args.big // 4), args.big_mib)
        count, total = small_count + big_count, small_total + big_total
    else:
        count, total = populate(smb.path / folder, smb.username, small, args.files if small else args.big,
                                args.big_mib)
    rclone(smb, s3, folder, f"rclone-restore-{case}")
    ours(smb, s3, folder, f"ours-restore-{case}", cert, cache / case, f"{case}1")
    key = cache / "restore-key.pem"
    key.write_bytes(key_pem)
    repo = Repository(bench_store(s3, f"ours-restore-{case}", cert, cache / case), "bench")   # as the CLI opens it
    keys = KeyRing.from_files(keys=[key])
    servers = {"moto": lambda: tree_cpu_seconds(s3.process.pid),
               "smbd": lambda: tree_cpu_seconds(int((smb.conf.parent / "pid" / "smbd.pid").read_text().strip()))}
    variants = args.writers.split(",")
    best: dict[object, tuple[float, dict]] = {}
    rounds: dict[object, list[float]] = {}

    def timed(key: object, run) -> None:
        started, spent, alone = time.monotonic(), cpu_seconds(), time.process_time()
        busy = {name: read() for name, read in servers.items()}
        run()
        seconds = time.monotonic() - started
        stats = {"cpu_seconds": cpu_seconds() - spent, "bytes_read": total,
                 "servers": {name: read() - busy[name] for name, read in servers.items()}}
        if key != "rclone":
            stats["servers"] = {"restoring process": time.process_time() - alone, **stats["servers"]}
        print(f"({case}) {key}: {seconds:.2f} s, load {os.getloadavg()[0]:.1f}", flush=True)
        rounds.setdefault(key, []).append(seconds)
        if key not in best or seconds < best[key][0]:
            best[key] = (seconds, stats)

    for rep in range(args.repeat):                      # in turn, each into a fresh folder; best time counts
        names = [f"restored-rclone-{case}{rep}", *(f"restored-ours-{case}{rep}-w{w}" for w in variants)]
        for name in names:
            (smb.path / name).mkdir()
            shutil.chown(smb.path / name, smb.username)
        runs = [("rclone", lambda: subprocess.run(
            ["rclone", "copy", f"dst:rclone-restore-{case}/{folder}", f"src:{smb.share}/{names[0]}"],
            env=rclone_env(smb, s3), check=True, capture_output=True))]
        for name, writers in zip(names[1:], variants, strict=True):
            def restore(name: str = name, writers: str = writers) -> None:
                target = open_tree(smb.unc(name), username=smb.username, password=smb.password, port=smb.port)
                report = Restorer(repo, target, keys=keys, temp_root=cache / "restore-tmp", **variant(writers)) \
                    .run(repo.manifest(f"{case}1", keys, cached=False))
                target.close()
                if not report.exact:
                    raise SystemExit(f"our restore is not exact: {report.failed[:5]}")
            runs.append((writers, restore))
        for key, run in runs[rep % len(runs):] + runs[:rep % len(runs)]:    # each round starts with another tool
            os.sync()                                   # the last run's dirty pages are not flushed during this one
            timed(key, run)
        for name in names:
            for source in (smb.path / folder).rglob("*.bin"):
                if not filecmp.cmp(source, smb.path / name / source.relative_to(smb.path / folder), shallow=False):
                    raise SystemExit(f"{name}/{source.name} differs from the source")
            shutil.rmtree(smb.path / name)
    s3.reset()
    label = f"({case}) restore {count} files 4-64 KiB" if small else \
        f"({case}) restore {small_count} files 4-64 KiB + {big_count} x {args.big_mib} MiB" if mixed else \
        f"({case}) restore {count} x {args.big_mib} MiB"
    label += f", best of {args.repeat}" if args.repeat > 1 else ""
    theirs = best["rclone"][0]
    medians = {key: statistics.median(times) for key, times in rounds.items()}
    print(f"({case}) medians of {args.repeat}: " + ", ".join(
        f"{key} {m:.2f} s" + ("" if key == "rclone" else f" ({medians['rclone'] / m:.2f}x)")
        for key, m in medians.items()), flush=True)
    return [row(label, "rclone", theirs, count, total, None, best["rclone"][1]),
            *(row(label, variant_label(w), best[w][0], count, total, theirs, best[w][1]) for w in variants)]


def variant(writers: str) -> dict:
    """A ``--writers`` item as Restorer options: N writer processes; a trailing f restores file by file."""
    return {"writers": int(writers.rstrip("f")), "streamed": not writers.endswith("f")}


def variant_label(writers: str) -> str:
    return f"appsvc-dr, {writers.rstrip('f')} writer processes" + (", file by file" if writers.endswith("f") else "")


def small_cases(smb, s3, cert, cache: Path, args: argparse.Namespace) -> list[str]:
    rows = []
    count, total = populate(smb.path / "small", smb.username, True, args.files)
    r = rclone(smb, s3, "small", "rclone-small")
    o, stats = ours(smb, s3, "small", "ours-small", cert, cache, "a")
    rows += [row(f"(a) {count} files 4-64 KiB", "rclone", r, count, total, None),
             row(f"(a) {count} files 4-64 KiB", "appsvc-dr", o, count, total, r, stats)]
    if "c" in args.cases:
        r = rclone(smb, s3, "small", "rclone-small")
        o, stats = ours(smb, s3, "small", "ours-small", cert, cache, "c")
        rows += [row("(c) re-sync, nothing changed", "rclone", r, count, total, None),
                 row("(c) re-sync, nothing changed", "appsvc-dr", o, count, total, r, stats)]
    if "d" in args.cases:
        changed, nbytes = change_one_percent(smb.path / "small", smb.username)
        r = rclone(smb, s3, "small", "rclone-small")
        o, stats = ours(smb, s3, "small", "ours-small", cert, cache, "d")
        rows += [row(f"(d) re-sync, {changed} files changed", "rclone", r, changed, nbytes, None),
                 row(f"(d) re-sync, {changed} files changed", "appsvc-dr", o, changed, nbytes, r, stats)]
    s3.reset()
    shutil.rmtree(smb.path / "small")
    return rows



# ---- memory (cases m, n) -------------------------------------------------------------------------------------
def rss_mib(pid: int | str = "self") -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError):
        return 0.0


def memory_child(spec_json: str) -> None:
    """One first sync with default settings (the worker's job), in this process; prints its RSS before and
    after the job (after: the job's objects dropped, as the worker's next idle moment)."""
    spec = json.loads(spec_json)
    store = bench_store(SimpleNamespace(endpoint=spec["endpoint"], access_key=spec["access_key"],
                                        secret_key=spec["secret_key"], region=spec["region"]), spec["bucket"],
                        spec["cert"].encode(), Path(spec["cache"]))
    if "restore_to" in spec:
        return memory_restore(spec, store)
    settings = FileshareSettings(source=spec["unc"], username=spec["username"], password=spec["password"],
                                 port=spec["port"], cache_dir=Path(spec["cache"]),
                                 **json.loads(os.environ.get("BENCH_FILESHARE_SETTINGS", "{}")))
    before = rss_mib()
    repo = Repository(store, "bench", cache_dir=Path(spec["cache"]))
    tree = open_tree(spec["unc"], username=spec["username"], password=spec["password"], port=spec["port"])
    result = Sync(settings, repo, tree).run(spec["sid"], "bench", spec["sid"], None)
    commit(repo, result)
    tree.close()
    del result, repo, tree
    time.sleep(1.0)
    print(json.dumps({"before": before, "after": rss_mib(), "peak": vm_hwm_mib()}))


def memory_restore(spec: dict, store: ArtifactStore) -> None:
    """Case (r): one restore of snapshot ``sid`` to a fresh folder, in this process (and its writer processes)."""
    before = rss_mib()
    repo = Repository(store, "bench")
    keys = KeyRing.from_files(keys=[Path(spec["key"])])
    target = open_tree(spec["restore_to"], username=spec["username"], password=spec["password"], port=spec["port"])
    report = Restorer(repo, target, keys=keys, temp_root=Path(spec["cache"]) / "restore-tmp",
                      **variant(spec["writers"])).run(repo.manifest(spec["sid"], keys, cached=False))
    if not report.exact:
        raise SystemExit(f"the restore is not exact: {report.failed[:5]}")
    target.close()
    del report, repo, target
    time.sleep(1.0)
    print(json.dumps({"before": before, "after": rss_mib(), "peak": vm_hwm_mib()}))


def measure(argv: list[str], spec: dict) -> dict:
    """Run ``argv`` (``spec`` in its environment: it holds the share's password) to completion, sampling its
    process tree: peak RSS per process, peak of the tree's sum."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env={**os.environ, "BENCH_MEMORY_SPEC": json.dumps(spec)})
    peaks: dict[int, float] = {}
    tree_peak = 0.0
    while proc.poll() is None:
        pids = [proc.pid, *(pid for pid, _ in descendants(proc.pid))]
        for pid in pids:
            peaks[pid] = max(peaks.get(pid, 0.0), vm_hwm_mib(pid))
        tree_peak = max(tree_peak, sum(rss_mib(pid) for pid in pids))
        time.sleep(0.02)
    out = proc.stdout.read().decode() if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(f"the measured sync failed ({proc.returncode})")
    own = json.loads(out.strip().splitlines()[-1])
    others = sorted((peak for pid, peak in peaks.items() if pid != proc.pid), reverse=True)
    return {"worker": max(peaks.get(proc.pid, 0.0), own["peak"]), "readers": others, "tree": tree_peak,
            "before": own["before"], "after": own["after"], "seconds": time.monotonic() - started}


def memory_row(label: str, m: dict) -> str:
    readers = ", ".join(f"{r:.0f}" for r in m["readers"]) or "-"
    return (f"| {label:30} | {m['worker']:6.0f} | {readers:>16} | {m['tree']:6.0f} | {m['before']:5.0f} → "
            f"{m['after']:5.0f} | {m['seconds']:7.1f} |")


def memory_cases(smb, s3, cert_pem: bytes, key_pem: bytes, cache: Path, args: argparse.Namespace) -> list[str]:
    rows = ["| memory case (default settings) | worker peak MiB | reader processes' peaks MiB | tree peak MiB "
            "| worker RSS before → after the job | seconds |", "|---|---|---|---|---|---|"]
    cases = [(c, label, small, n) for c, label, small, n in (
        ("m", f"(m) {args.big} x {args.big_mib} MiB", False, args.big),
        ("n", f"(n) {args.files} files 4-64 KiB", True, args.files)) if c in args.cases]
    for case, label, small, count in cases:
        folder = f"mem-{case}"
        populate(smb.path / folder, smb.username, small, count, args.big_mib)
        spec = {"endpoint": s3.endpoint, "access_key": s3.access_key, "secret_key": s3.secret_key, "region": s3.region,
                "bucket": f"mem-{case}", "cert": cert_pem.decode(), "unc": smb.unc(folder),
                "username": smb.username, "password": smb.password, "port": smb.port,
                "cache": str(cache / folder), "sid": case}
        rows.append(memory_row(label, measure([sys.executable, __file__, "--memory-child"], spec)))
        s3.reset()
        shutil.rmtree(smb.path / folder)
    if "r" in args.cases:
        rows += memory_restores(smb, s3, cert_pem, key_pem, cache, args)
    return rows


def memory_restores(smb, s3, cert_pem: bytes, key_pem: bytes, cache: Path, args: argparse.Namespace) -> list[str]:
    """(r): the large files stored once, then restored to a fresh folder by a fresh process per writer count."""
    rows = []
    (cache / "mem-r").mkdir(parents=True, exist_ok=True)
    (cache / "mem-r" / "key.pem").write_bytes(key_pem)
    populate(smb.path / "mem-r", smb.username, False, args.big, args.big_mib)
    ours(smb, s3, "mem-r", "mem-r", cert_pem, cache / "mem-r", "r")
    for writers in (w for w in args.writers.split(",") if not w.endswith("f")):
        name = f"mem-r-restored-{writers}"
        (smb.path / name).mkdir()
        shutil.chown(smb.path / name, smb.username)
        spec = {"endpoint": s3.endpoint, "access_key": s3.access_key, "secret_key": s3.secret_key, "region": s3.region,
                "bucket": "mem-r", "cert": cert_pem.decode(), "key": str(cache / "mem-r" / "key.pem"),
                "restore_to": smb.unc(name), "username": smb.username, "password": smb.password, "port": smb.port,
                "cache": str(cache / "mem-r"), "sid": "r", "writers": writers}
        rows.append(memory_row(f"(r) restore {args.big} x {args.big_mib} MiB, {variant_label(writers)[11:]}",
                               measure([sys.executable, __file__, "--memory-child"], spec)))
        shutil.rmtree(smb.path / name)
    s3.reset()
    shutil.rmtree(smb.path / "mem-r")
    return rows


if __name__ == "__main__":
    main()
