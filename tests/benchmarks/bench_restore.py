"""PostgreSQL restore end to end against rclone + pg_restore: ``python tests/benchmarks/bench_restore.py
[--size-mib 1024] [--repeat 2]``. Not collected by pytest; needs PostgreSQL (tests/fixtures/postgres.py),
moto[server] and rclone.

A scratch database (``bench_database.generate``) is backed up once by each tool, untimed: ours by the
db-backup and upload workers (``bench_database.ours``: product defaults, pg_dump -Z0 then zstd + AES-256-GCM
to moto S3), the peer's ``pg_dump -Fc`` copied with ``rclone copyto``. Then each round restores it into a
fresh database, the two tools alternately:

- ``ours``: in a child process, ``restore_from_set`` as `appsvc-dr restore database` runs it for a database
  that does not exist yet (product defaults): the artifact fetched, decrypted, decompressed and hashed while
  pg_restore restores it into a scratch database, renamed to the target once the signed record and SHA-256
  checked out and every table is there; then every table's rows counted. Seconds measured in the child around
  that call.
- ``ours-staged``: the same with ``restore_while_fetching`` off (as for an existing target): the artifact
  fetched and verified into a private staged file first, pg_restore --list checked, pg_restore.
- ``peer``: ``createdb`` (ours creates its database inside its time too), ``rclone copyto`` the dump back to a
  local file, then ``pg_restore --no-owner --exit-on-error`` into it: process wall times, no verification.

Peak RSS: our worker process's VmHWM, pg_restore and rclone polled from /proc. Targets (issue 17): ours
<= 1.0x the peer's time, worker RSS <= 200 MiB.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks import bench_database as backup  # noqa: E402
from tests.benchmarks.procs import run, vm_hwm_mib  # noqa: E402

MiB = 1 << 20
TARGET_RATIO, TARGET_RSS_MIB = 1.0, 200


def child_main(cfg: dict) -> None:
    """One ``restore_from_set`` (fetch, decrypt, verify, pg_restore, count rows); prints seconds and RSS as JSON."""
    from tests.unit.forge import configured_store
    from workers.config import load_settings
    from workers.dbbackup.restore import restore_from_set
    from workers.engines.postgres import PostgresEngine
    from workers.storage.codec import KeyRing

    settings = load_settings(**cfg["settings"])
    engine, store = PostgresEngine(settings.database), configured_store(settings)
    keys = KeyRing.from_files(keys=[Path(cfg["key"])])
    phases: dict[str, float] = {}
    for name in ("restore", "restore_streamed", "count_rows", "_listing"):   # the staged path's fetch is the rest
        setattr(engine, name, backup.timed(phases, name, getattr(engine, name)))   # the same object: no override
    started = time.perf_counter()
    result = restore_from_set(settings.staging, settings.database, engine, store, keys, stamp="stamp1",
                              set_id=cfg["set_id"], database=cfg["database"], target=cfg["target"],
                              say=lambda line: None)
    seconds = time.perf_counter() - started
    counting = phases.pop("count_rows")
    if "restore_streamed" in phases:          # fetch, decrypt, verify and pg_restore at once, then the rename
        phases = {"fetch+pg_restore": phases.pop("restore_streamed") - counting, "count_rows": counting}
    else:
        restore = phases.pop("restore")
        phases.update(fetch=seconds - restore, pg_restore=restore - phases.pop("_listing") - counting,
                      count_rows=counting)
    print(json.dumps({"seconds": seconds, "rows": result.rows, "rss": vm_hwm_mib(), "phases": phases}))


def pg_env(database: str) -> dict[str, str]:
    from tests.fixtures.postgres import PG_HOST, PG_PORT, PG_USER
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGHOST=PG_HOST, PGPORT=str(PG_PORT), PGUSER=PG_USER, PGDATABASE=database)
    return env


def rclone_env(server) -> dict[str, str]:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}   # breaks rclone's s3 backend
    env.update({"RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
                "RCLONE_CONFIG_BENCH_ENDPOINT": server.url, "RCLONE_CONFIG_BENCH_REGION": "us-east-1",
                "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": backup.ACCESS_KEY,
                "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": backup.SECRET_KEY})
    return env


def peer(server, database: str, target: str, work: Path) -> dict:  # type: ignore[no-untyped-def]
    dump = work / "peer-restore.dump"
    create_s, _, _, _ = run(["createdb", target], pg_env("postgres"))
    copy_s, copy_rss, _, _ = run(["rclone", "copyto", "bench:bench-peer/peer.dump", str(dump), "--s3-no-head",
                                  "-q"], rclone_env(server))
    restore_s, restore_rss, _, _ = run(["pg_restore", "--no-owner", "--exit-on-error", f"--dbname={target}",
                                        str(dump)], pg_env(target))
    dump.unlink()
    return {"seconds": create_s + copy_s + restore_s, "rss": copy_rss, "pg_restore": restore_rss,
            "phases": {"createdb": create_s, "copy": copy_s, "pg_restore": restore_s}}


def drop(database: str) -> None:
    from tests.fixtures.postgres import connect
    with contextlib.closing(connect()) as conn:
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child_main(json.loads(sys.argv[2]))
        return
    ns = backup.arguments(__doc__, repeat=2).parse_args()

    from tests.fixtures import postgres as pgfx
    from workers.storage.keys import generate_self_signed

    with backup.generated(ns, "bench_rs") as scratch:
        work, database, server, db_mib = scratch.work, scratch.database, scratch.server, scratch.mib
        cert, key = generate_self_signed("appsvc-dr-bench", 1, key_size=3072)
        (work / "cert.pem").write_bytes(cert)
        (work / "key.pem").write_bytes(key)
        settings = {"store": {"kind": "s3", "s3_endpoint": server.endpoint, "s3_access_key": backup.ACCESS_KEY,
                              "s3_secret_key": backup.SECRET_KEY, "s3_bucket": "bench-ours", "s3_secure": False},
                    "encryption": {"certificate": str(work / "cert.pem"), "compress": True},
                    "staging": {"database_dir": str(work / "staging")},
                    "database": {"engine": "postgres", "server": pgfx.PG_HOST, "port": pgfx.PG_PORT,
                                 "username": pgfx.PG_USER, "databases": [database]}}
        stored = backup.ours({"database": database, "set_id": "set-1", "settings": settings})
        backup.peer(server, database, work, "bench-peer")
        print(f"  backed up: ours {stored['stored'] / MiB:.0f} MiB stored, peer's dump copied", flush=True)
        runs: dict[str, list[dict]] = {"ours": [], "ours-staged": [], "peer": []}
        for round_no in range(ns.repeat):
            order = ("ours", "peer", "ours-staged") if round_no % 2 == 0 else ("ours-staged", "peer", "ours")
            for variant in order:
                target = f"{database}_{variant.replace('-', '_')}_{round_no}"
                try:
                    if variant == "peer":
                        row = peer(server, database, target, work)
                    else:
                        streamed = {**settings, "database": {**settings["database"],
                                                             "restore_while_fetching": variant == "ours"}}
                        _, own, tools, out = run([sys.executable, str(Path(__file__).resolve()), "--child",
                                                  json.dumps({"database": database, "target": target, "set_id": "set-1",
                                                              "key": str(work / "key.pem"), "settings": streamed})],
                                                 watch_descendants=True)
                        result = json.loads(out.strip().splitlines()[-1])
                        row = {**result, "rss": max(own, result["rss"]), "pg_restore": tools.get("pg_restore", 0.0)}
                finally:
                    drop(target)
                runs[variant].append(row)
                phases = ", ".join(f"{k} {v:.1f}" for k, v in row["phases"].items())
                print(f"  {variant}: {row['seconds']:6.1f} s ({phases})  RSS {row['rss']:.0f} MiB  pg_restore "
                      f"{row['pg_restore']:.0f} MiB  load {os.getloadavg()[0]:.1f}", flush=True)
    best = {v: min(rows, key=lambda r: r["seconds"]) for v, rows in runs.items()}
    ratio, rss = best["ours"]["seconds"] / best["peer"]["seconds"], max(r["rss"] for r in runs["ours"])
    print(f"\nbest of {ns.repeat}, database {db_mib:.0f} MiB\n")
    for variant, name in (("ours", "ours (restored while fetched)"), ("ours-staged", "ours, fetched first"),
                          ("peer", "rclone copyto + pg_restore")):
        r = best[variant]
        print(f"{name:28s} {r['seconds']:7.1f} s {db_mib / r['seconds']:7.1f} MiB/s "
              f"{r['seconds'] / best['peer']['seconds']:5.2f}x  RSS {max(x['rss'] for x in runs[variant]):.0f} MiB")
    print(f"\n  target time <= {TARGET_RATIO}x peer   {'met   ' if ratio <= TARGET_RATIO else 'MISSED'} ({ratio:.2f}x)")
    print(f"  target worker RSS <= {TARGET_RSS_MIB} MiB {'met   ' if rss <= TARGET_RSS_MIB else 'MISSED'} ({rss:.1f})")


if __name__ == "__main__":
    main()
