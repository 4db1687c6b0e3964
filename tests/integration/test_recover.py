"""`appsvc-dr recover` end to end, a disaster rehearsed: a stamp stand-in (two PostgreSQL databases with data, a
Samba share with a tree, a SystemSecrets.json) is backed up by the real workers on RabbitMQ into the S3 server,
drilled, then destroyed (databases dropped, share wiped, secrets gone). `recover plan` first fails on a share the
login may not write and on one it cannot reach, naming the fix; a dry run changes nothing; `recover run` is
SIGKILLed after its database steps and resumed: it finishes without redoing them (their records untouched); the
data comes back row for row and byte for byte, the controller script parses and holds every documented step in
order with the overrides, the RTO metrics are written, and a second run refuses non-empty targets without
--force."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.fixtures import closed_port, started
from tests.fixtures.postgres import PG_HOST, PG_PORT, PG_USER, connect, drop_database, fill_sample, \
    postgres_available, scratch_database, table_fingerprints
from tests.fixtures.backup import back_up
from tests.fixtures.rabbit import REPO, env_for, run_cli, settings_for, vhost, wait_for
from tests.integration.test_fileshare_smb import share_dir
from tests.integration.test_postgres_restore_preflight import login_without_createdb
from tests.unit.certs import make_cert, signing_settings
from tests.unit.forge import configured_store
from tests.unit.test_fileshare_trees import make_tree
from tests.unit.test_recover_controller import controller_calls
from workers.recover.metrics import DURATION, ESTIMATED

pytestmark = pytest.mark.integration
STAMP = "stamp1"
SECRETS = {"SqlServerPassword": "CANARY-recover-77", "FileServerUserPassword": "p-CANARY-recover-77", "Version": 3}


def tree_digest(root: Path) -> dict[str, tuple[str, int] | None]:
    """{relative path: (sha256, mtime in 100 ns) for a file, None for a directory}, everything under root."""
    out: dict[str, tuple[str, int] | None] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = None if path.is_dir() else (hashlib.sha256(path.read_bytes()).hexdigest(),
                                               path.stat().st_mtime_ns // 100)
    return out


@pytest.fixture(scope="module")
def stamp(tmp_path_factory, smb_server, s3_server):
    root = tmp_path_factory.mktemp("recover")
    make_cert("recover-test").write(root)
    (root / "drop").mkdir()
    share, unc = share_dir(smb_server)
    make_tree(share, big=40 * 1024 * 1024, owner=smb_server.username)   # the share step takes a while
    with started("PostgreSQL", postgres_available()), scratch_database() as db1, scratch_database() as db2, \
            vhost() as name:
        fill_sample(db1, rows=800)
        fill_sample(db2, rows=300)
        settings = settings_for(
            name, store={"kind": "s3", "s3_endpoint": s3_server.endpoint, "s3_access_key": s3_server.access_key,
                         "s3_secret_key": s3_server.secret_key, "s3_bucket": f"recover-{uuid.uuid4().hex[:10]}",
                         "s3_region": s3_server.region, "s3_secure": False},
            encryption={"certificate": str(root / "cert.pem"), **signing_settings(root)},
            secrets={"drop_path": str(root / "drop")}, staging={"database_dir": str(root / "staging")},
            database={"engine": "postgres", "server": PG_HOST, "port": PG_PORT, "username": PG_USER,
                      "databases": [db1, db2]},
            fileshare={"source": unc, "username": smb_server.username, "password": smb_server.password,
                       "port": smb_server.port, "cache_dir": str(root / "cache")})
        done = back_up(settings, STAMP, root / "SystemSecrets.json", SECRETS)
        drill = run_cli(settings, "drill", "--stamp", STAMP, "--key", str(root / "key.pem"), "--textfile",
                        str(root / "drill.prom"), timeout=300)
        assert drill.returncode == 0, drill.stdout + drill.stderr
        before = {"tables": {db: table_fingerprints(db) for db in (db1, db2)}, "share": tree_digest(share)}
        # The disaster: the databases dropped, the share wiped, the exported secrets gone
        for db in (db1, db2):
            drop_database(db)
        for child in share.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        yield dict(root=root, settings=settings, store=configured_store(settings).backend, dbs=(db1, db2), share=share, unc=unc, before=before,
                   set_id=done.correlation_id, smb=smb_server)


def recover_args(s: dict, *extra: str, target: str | None = None) -> list[str]:
    root = s["root"]
    return ["recover", *extra, "--stamp", STAMP, "--key", str(root / "key.pem"), "--fileshare-target",
            target or s["unc"], "--secrets-out", str(root / "out" / "SystemSecrets.json"),
            "--out-dir", str(root / "out"), "--override-database-server", "sql-restored.contoso.local,1433",
            "--override-content-share", r"\\fs-restored\websites"]


KEPT = ("status", "runs", "started_at", "finished_at", "seconds", "proof")   # what a skipped step leaves alone


def exists(database: str) -> bool:
    with contextlib.closing(connect()) as conn:
        return bool(conn.cursor().execute("SELECT 1 FROM pg_database WHERE datname = ?", database).fetchall())


def recovery_ids(s: dict) -> list[str]:
    """The recoveries' state files in the store (the S3 server), by id."""
    prefix = f"{STAMP}/recoveries/"
    return [i.key[len(prefix):-5] for i in s["store"].list(prefix) if i.key.endswith(".json")]


def state_of(s: dict, recovery_id: str) -> dict:
    with s["store"].open(f"{STAMP}/recoveries/{recovery_id}.json") as stream:
        return json.loads(stream.read())


def test_a_destroyed_stamp_is_recovered_resumably_in_the_documented_order(stamp):
    s, settings = stamp, stamp["settings"]
    (s["root"] / "out").mkdir(mode=0o700)
    # Given a target share the login may only read: the plan fails, names the problem and the fix, changes nothing
    readonly = s["smb"].unc(share=s["smb"].readonly_share)
    out = run_cli(settings, *recover_args(s, "plan", target=readonly), timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"recovery of {STAMP} from backup set {s['set_id']}: the newest complete set that passed a restore " \
           "drill" in out.stdout
    assert re.search(r"file-share target .*readonly.* is not reachable or not writable", out.stdout)
    assert "how to fix: Give the restoring account write access" in out.stdout
    # And the plan lists every step in the documented order with sizes and estimates from the drill
    steps = re.findall(r"^ *\d+ (\S+)", out.stdout.split("estimated duration")[0], re.M)
    assert steps == [f"database:{s['dbs'][0]}", f"database:{s['dbs'][1]}", "fileshare", "reacl", "secrets",
                     "controller-script", "controller", "function-apps"] or \
        steps == [f"database:{s['dbs'][1]}", f"database:{s['dbs'][0]}", "fileshare", "reacl", "secrets",
                  "controller-script", "controller", "function-apps"]
    assert "unknown" not in out.stdout.split("estimated duration")[1].splitlines()[0]
    assert not (s["root"] / "out" / "SystemSecrets.json").exists()
    # And with a key of another certificate the plan says the key does not open the set, with the fix
    (s["root"] / "other").mkdir()
    make_cert("another").write(s["root"] / "other")
    args = recover_args(s, "plan")
    args[args.index("--key") + 1] = str(s["root"] / "other" / "key.pem")
    out = run_cli(settings, *args, timeout=300)
    assert out.returncode == 1 and "the private key does not open the secrets of set" in out.stdout, out.stdout
    assert "how to fix: Pass the private key of the certificate with thumbprint" in out.stdout
    # And a database login that may not create the dropped databases: each named, with the statement that fixes it
    with login_without_createdb() as weak:
        out = run_cli(settings, *recover_args(s, "plan"), timeout=300, APPSVC_DR_DATABASE__USERNAME=weak)
    assert out.returncode == 1, out.stdout + out.stderr
    for db in s["dbs"]:
        assert f"login '{weak}' may not create database '{db}'" in out.stdout
    assert f'how to fix: ALTER ROLE "{weak}" CREATEDB;' in out.stdout
    # And a share that cannot be reached (nothing listens on the port): named, with what to check
    args = recover_args(s, "plan")
    out = run_cli(settings, *args, "--fileshare-port", str(closed_port()), timeout=300)
    assert out.returncode == 1 and re.search(r"file-share target .* is not reachable or not writable", out.stdout)
    assert re.search(r"how to fix: .*Check --fileshare-target .*--fileshare-port and that the file server is up",
                     out.stdout), out.stdout
    # When the plan is made against the real target it passes
    out = run_cli(settings, *recover_args(s, "plan"), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    # And a dry run does every check and changes nothing: no state, no database, an empty share, no file written
    out = run_cli(settings, *recover_args(s, "run", "--dry-run"), timeout=300)
    assert out.returncode == 0 and "dry run: every check passed, nothing was changed" in out.stdout, out.stdout
    assert recovery_ids(s) == []
    assert not any(exists(db) for db in s["dbs"]) and not list(s["share"].iterdir())
    assert not list((s["root"] / "out").iterdir())
    # And a run killed after its database steps
    prom = s["root"] / "rto.prom"
    child = subprocess.Popen([sys.executable, "-m", "workers.cli", *recover_args(s, "run"), "--textfile", str(prom)],
                             env=env_for(settings), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    try:
        def databases_done():
            found = recovery_ids(s)
            if not found:
                return None
            try:
                data = state_of(s, found[0])
            except ValueError:
                return None
            dbs = [x for x in data["steps"] if x["kind"] == "database"]
            return data if all(x["status"] == "done" for x in dbs) else None
        first = wait_for(databases_done, 240, interval=0.05, what="database steps done")
        os.killpg(child.pid, signal.SIGKILL)
    finally:
        child.wait(30)
    assert child.returncode == -signal.SIGKILL, "the run ended by itself before the kill"
    recovery_id = first["recovery_id"]
    killed = state_of(s, recovery_id)
    assert {x["step_id"]: x["status"] for x in killed["steps"]}["fileshare"] != "done", "the run ended before the kill"
    # When it is resumed
    out = run_cli(settings, *recover_args(s, "run"), "--resume", recovery_id, "--textfile", str(prom), timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    # Then the databases were not restored again (verified, skipped), the rest ran once to completion
    final = state_of(s, recovery_id)
    by_id = {x["step_id"]: x for x in final["steps"]}
    before_kill = {x["step_id"]: x for x in killed["steps"]}
    for db in s["dbs"]:
        step = f"database:{db}"
        assert f"skipped {step}: done in an earlier run and verified again" in out.stdout
        assert f"running {step}" not in out.stdout
        # the step's record is exactly the one the killed run wrote: same run count, times, duration and proof
        assert by_id[step]["runs"] == 1 and {k: by_id[step][k] for k in KEPT} == {k: before_kill[step][k] for k in KEPT}
    # And the two databases were restored at the same time (--parallel 2, the default)
    one, two = (by_id[f"database:{db}"] for db in s["dbs"])
    assert one["started_at"] < two["finished_at"] and two["started_at"] < one["finished_at"]
    assert all(x["status"] == ("manual" if x["kind"] in ("reacl", "controller", "function-apps") else "done")
               for x in final["steps"]), final["steps"]
    assert final["finished_at"] and "signature" in final
    # And the data is back row for row and byte for byte
    for db in s["dbs"]:
        assert table_fingerprints(db) == s["before"]["tables"][db]
    assert tree_digest(s["share"]) == s["before"]["share"]
    secrets = s["root"] / "out" / "SystemSecrets.json"
    assert json.loads(secrets.read_text()) == SECRETS and secrets.stat().st_mode & 0o777 == 0o600
    assert "CANARY" not in out.stdout + json.dumps(final)
    # And the controller script holds every documented step in order, with the overrides
    script = (s["root"] / "out" / "Restore-AppServiceController.ps1").read_text(encoding="utf-8-sig")
    assert controller_calls(script) == [
        "Start-Transcript", "net stop WebFarmService", "net stop ResourceMetering",
        "Restore-AppServiceStamp -FilePath $SecretsFile -OverrideDatabaseServer $OverrideDatabaseServer "
        "-OverrideContentShare $OverrideContentShare", "Restore-AppServiceRoles", "net start WebFarmService",
        "net start ResourceMetering", "Get-AppServiceServer", "Get-AppServiceSite | Sync-AppServiceObject",
        "Get-AppServiceServerFarm | Sync-AppServiceObject", "Stop-Transcript"]
    assert "'sql-restored.contoso.local,1433'" in script and r"'\\fs-restored\websites'" in script
    assert r"'C:\AppServiceRecovery\SystemSecrets.json'" in script
    checklist = (s["root"] / "out" / "recovery-checklist.md").read_text()
    assert "ReACL.cmd" in checklist and "AzureWebJobsStorage" in checklist
    # And the RTO is measured: metrics per step and the drill's estimate, and the report's timeline
    metrics = prom.read_text()
    for step in (f"database:{s['dbs'][0]}", "fileshare", "secrets", "total"):
        assert re.search(rf'^{DURATION}{{stamp="{STAMP}",step="{step}"}} \d', metrics, re.M), step
    # (the estimate is the weekly drill's textfile's: one writer of that series)
    assert re.search(rf'^{ESTIMATED}{{stamp="{STAMP}"}} \d', (s["root"] / "drill.prom").read_text(), re.M)
    assert ESTIMATED not in metrics
    report = run_cli(settings, "recover", "report", recovery_id, "--stamp", STAMP)
    assert report.returncode == 0 and "measured RTO of the automated steps" in report.stdout
    status = run_cli(settings, "recover", "status", recovery_id, "--stamp", STAMP)
    assert status.returncode == 0 and "automated steps done in" in status.stdout
    # And a new recovery refuses to restore over what is now there without --force: a row and a file added since
    # are still there afterwards, and no new recovery was started
    with contextlib.closing(connect(s["dbs"][0])) as conn:
        conn.cursor().execute("INSERT INTO sites (name, created, payload) VALUES ('after-recovery', now(), 'x')")
        conn.commit()
    (s["share"] / "after-recovery.txt").write_text("kept")
    again = run_cli(settings, *recover_args(s, "run"), timeout=300)
    assert again.returncode == 1 and "nothing was changed" in again.stdout, again.stdout
    assert re.search(rf"database '{s['dbs'][0]}' on .* exists and holds \d+ table\(s\): a restore would replace "
                     "it", again.stdout) and "is not empty" in again.stdout and "Pass --force" in again.stdout
    assert (s["share"] / "after-recovery.txt").read_text() == "kept"
    assert table_fingerprints(s["dbs"][0]) != s["before"]["tables"][s["dbs"][0]]
    assert recovery_ids(s) == [recovery_id]
