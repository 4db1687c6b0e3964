"""`appsvc-dr drill` end to end: the real pipeline (secrets, db-backup, upload, fileshare and catalog workers on
RabbitMQ, a real PostgreSQL database, a local content share) makes one complete backup set; the drill restores
it into scratch space, reports every component, records the result, and fails loudly on a tampered artifact.
The same set copied to an S3 server (moto over HTTP) drills the same way."""
from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path

import pytest

from tests.fixtures import started
from tests.fixtures.postgres import PG_HOST, PG_PORT, PG_USER, connect, fill_sample, postgres_available, \
    scratch_database
from tests.fixtures.backup import back_up
from tests.fixtures.rabbit import run_cli, settings_for, vhost
from tests.unit.certs import make_cert, signing_settings
from tests.unit.test_fileshare_trees import make_tree
from workers.drill.results import METRIC
from workers.storage.factory import build_store
from workers.storage.local import LocalStore

pytestmark = pytest.mark.integration
STAMP = "stamp1"
CANARY = "CANARY-drill-9c1d-never-print"
SECRETS = {"SqlServerPassword": CANARY, "FileServerUserPassword": "p-" + CANARY, "Version": 3}


class Pipeline:
    def __init__(self, root: Path, settings, database: str, set_id: str) -> None:
        self.root, self.settings, self.database, self.set_id = root, settings, database, set_id
        self.key = root / "key.pem"

    def drill(self, *args: str, settings=None):
        return run_cli(settings or self.settings, "drill", "--stamp", STAMP, "--key", str(self.key), *args,
                       timeout=180)

    def with_store(self, **store):
        return self.settings.model_copy(update={"store": self.settings.store.model_copy(update=store)})


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """One complete set made by the real workers: a secrets rotation triggers backup-due for every component."""
    root = tmp_path_factory.mktemp("drill")
    make_cert("drill-test").write(root)
    make_tree(root / "share", big=256 * 1024)
    (root / "drop").mkdir()
    with started("PostgreSQL", postgres_available()), scratch_database() as database, vhost() as name:
        fill_sample(database, rows=500)
        settings = settings_for(
            name, store={"kind": "local", "local_path": str(root / "store")},
            encryption={"certificate": str(root / "cert.pem"), **signing_settings(root)}, secrets={"drop_path": str(root / "drop")},
            staging={"database_dir": str(root / "staging")},
            database={"engine": "postgres", "server": PG_HOST, "port": PG_PORT, "username": PG_USER,
                      "databases": [database]},
            fileshare={"source": str(root / "share"), "cache_dir": str(root / "cache")})
        done = back_up(settings, STAMP, root / "SystemSecrets.json", SECRETS, timeout=120)
        assert set(done.payload.components) == {"secrets", "databases", "fileshare"}
        yield Pipeline(root, settings, database, done.correlation_id)


def drill_id(stdout: str) -> str:
    return re.search(r"drill id ([0-9a-f]{8})", stdout).group(1)


def scratch_databases(tag: str) -> list[str]:
    with connect() as conn:
        return [r[0] for r in conn.cursor().execute("SELECT datname FROM pg_database WHERE datname LIKE ?",
                                                    f"drill_%_{tag}").fetchall()]


def test_drill_restores_every_component_into_scratch_space_and_records_it(pipeline):
    # Given the complete set, a scratch parent directory and a textfile-collector file
    scratch, prom = pipeline.root / "scratch", pipeline.root / "textfile" / "appsvc_dr_drill.prom"
    prom.parent.mkdir()
    # When the newest complete set is drilled
    out = pipeline.drill("--latest", "--scratch", str(scratch), "--textfile", str(prom))
    # Then every component passed, each on its own row, and the exit code is 0
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines()
            if line.split()[:1] in (["secrets"], ["databases"], ["fileshare"])}
    assert set(rows) == {"secrets", "databases", "fileshare"} and all(" passed " in r for r in rows.values())
    assert f"{pipeline.set_id} (complete set)" in out.stdout and "drill PASSED" in out.stdout
    assert "every SHA-256 verified" in out.stdout and "47 files" in out.stdout
    assert re.search(r"restored as drill_\w+ on \S+: ONLINE, 3 tables, 1500 rows; amcheck: \d+ B-tree indexes .* "
                     r"consistent; scratch database dropped", out.stdout)
    # And the scratch database and directory are gone, production is untouched
    tag = drill_id(out.stdout)
    assert scratch_databases(tag) == [] and list(scratch.iterdir()) == []
    # And the secrets never show, neither in the output nor in the stored marker
    assert CANARY not in out.stdout + out.stderr
    markers = list((pipeline.root / "store" / STAMP / pipeline.set_id / "drills").glob(f"*-{tag}.json"))
    marker = json.loads(markers[0].read_text())
    assert marker["result"] == "passed" and CANARY not in markers[0].read_text()
    assert [c["component"] for c in marker["components"]] == ["secrets", "databases", "fileshare"]
    # And the metric and the report say when the last drill passed
    assert re.search(rf'^{METRIC}{{result="passed",stamp="{STAMP}"}} \d\.\d+e\+09$', prom.read_text(), re.M)
    report = pipeline.drill("--report")
    assert report.returncode == 0 and tag in report.stdout and "last successful restore drill" in report.stdout


def test_tampered_database_artifact_fails_the_drill_with_a_hint(pipeline):
    # Given a copy of the store where one byte of the stored database backup is flipped
    store = pipeline.root / f"tampered-{uuid.uuid4().hex[:6]}"
    shutil.copytree(pipeline.root / "store", store)
    victim = next((store / STAMP / pipeline.set_id / "databases").glob("*.dump"))
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    settings = pipeline.with_store(local_path=str(store))
    # When the set is drilled
    out = pipeline.drill("--set", pipeline.set_id, settings=settings)
    # Then the database fails by name with how to fix it, the others pass, and the exit code is 1
    assert out.returncode == 1, out.stdout + out.stderr
    assert re.search(r"^databases .* failed ", out.stdout, re.M)
    assert f"FAILED  databases {pipeline.database} → drill_" in out.stdout and "how to fix: " in out.stdout
    assert f"{pipeline.set_id}/databases/{pipeline.database}.dump: segment" in out.stdout
    assert "drill FAILED: 1 of 3" in out.stdout and CANARY not in out.stdout + out.stderr
    assert scratch_databases(drill_id(out.stdout)) == []
    # And the report shows the failure (exit 1: the newest drill failed)
    report = pipeline.drill("--report", settings=settings)
    assert report.returncode == 1 and "failed" in report.stdout


def test_the_same_set_on_s3_drills_the_same_way(pipeline, s3_server):
    # Given the set copied object by object into an S3 bucket
    settings = pipeline.with_store(kind="s3", s3_endpoint=s3_server.endpoint, s3_access_key=s3_server.access_key,
                                   s3_secret_key=s3_server.secret_key, s3_bucket=f"drill-{uuid.uuid4().hex[:8]}",
                                   s3_region=s3_server.region, s3_secure=False, s3_create_bucket=True)
    source, target = LocalStore(pipeline.root / "store"), build_store(settings.store)
    for info in source.list(f"{STAMP}/"):
        with source.open(info.key) as stream:
            target.put(info.key, stream, size=info.size, metadata=info.metadata)
    # When the newest complete set is drilled from S3 (secrets and file share: no database server needed)
    out = pipeline.drill("--components", "secrets,fileshare", settings=settings)
    # Then both pass and the result lands next to the set in the bucket
    assert out.returncode == 0, out.stdout + out.stderr
    assert "drill PASSED" in out.stdout and CANARY not in out.stdout + out.stderr
    assert any("/drills/" in i.key for i in target.list(f"{STAMP}/{pipeline.set_id}/"))
