"""Mirror targets end to end: the real secrets, catalog and mirror workers on RabbitMQ store backup sets in a
primary S3 bucket (moto over HTTP) and copy them to a second S3 server and an SMB share (smbd); a secondary that
is down catches up when it returns; restores and drills read from a secondary alone when the primary is gone or
damaged."""
from __future__ import annotations

import contextlib
import io
import json
import uuid
from pathlib import Path

import pytest

from contracts import SecretsRotated, SecretsRotatedPayload, new_backup_set_id, utcnow
from tests.fixtures import free_port
from tests.fixtures.rabbit import dead_letters, run_cli, running, settings_for, tap, vhost, wait_for
from tests.fixtures.s3server import moto_s3_server
from tests.unit.certs import make_cert, signing_settings
from workers.app import App
from workers.runtime.publisher import Publisher
from workers.secrets.drop import copy_to_drop
from workers.storage.factory import build_store

pytestmark = pytest.mark.integration
STAMP = "stamp1"
CANARY = "CANARY-mirror-51e7-never-print"


def s3_target(server, name: str, bucket: str, **extra) -> dict:
    return {"name": name, "kind": "s3", "s3_endpoint": server.endpoint, "s3_access_key": server.access_key,
            "s3_secret_key": server.secret_key, "s3_bucket": bucket, "s3_region": server.region,
            "s3_secure": False, **extra}


class Site:
    """A site backing up its secrets to a primary S3 bucket, mirrored to ``targets``."""

    def __init__(self, root: Path, name: str, primary, targets: list[dict], **mirror) -> None:
        self.root = root
        make_cert("mirror-test").write(root)
        (root / "drop").mkdir(exist_ok=True)
        self.bucket = f"primary-{uuid.uuid4().hex[:8]}"
        store = {"kind": "s3", "s3_endpoint": primary.endpoint, "s3_access_key": primary.access_key,
                 "s3_secret_key": primary.secret_key, "s3_bucket": self.bucket, "s3_region": primary.region,
                 "s3_secure": False}
        settings = settings_for(name, store=store, mirror={"targets": targets, **mirror},
                                encryption={"certificate": str(root / "cert.pem"), **signing_settings(root)},
                                secrets={"drop_path": str(root / "drop")},
                                staging={"database_dir": str(root / "staging")})
        self.settings = settings.model_copy(update={"components": ("secrets",)})
        self.seen: list = []
        self.version = 0

    def app(self) -> App:
        return App(self.settings, ["secrets", "catalog", "mirror",
                                   tap(self.seen, "backup-set-completed", "artifact-mirrored", "job-failed")])

    def backup(self) -> str:
        """One rotation of SystemSecrets.json (new content each time): a complete set of the secrets."""
        self.version += 1
        exported = self.root / "SystemSecrets.json"
        exported.write_text(json.dumps({"SqlServerPassword": CANARY, "Version": self.version}))
        before = len(self.completed())
        with Publisher(self.settings.broker) as pub:
            dropped = copy_to_drop(exported, self.settings.secrets, self.settings.staging)
            pub.publish(SecretsRotated(source="test", stamp=STAMP, correlation_id=new_backup_set_id(),
                                       payload=SecretsRotatedPayload(drop_path=dropped, rotated_by="test",
                                                                     rotated_at=utcnow())))
        exported.unlink()
        wait_for(lambda: len(self.completed()) > before, 60, what="the rotation's backup set to complete")
        return self.completed()[-1]

    def completed(self) -> list[str]:
        return [e.correlation_id for e in self.seen if e.type == "backup-set-completed"]

    def mirrored(self, target: str, set_id: str, timeout: float = 60) -> None:
        """Wait until ``target`` reported nothing missing after the set completed."""
        wait_for(lambda: [e for e in self.seen if e.type == "artifact-mirrored" and e.payload.target == target
                          and e.correlation_id == set_id and e.payload.backlog == 0
                          and self._after_completion(e)], timeout, interval=0.3, what=f"{target} caught up")

    def _after_completion(self, event) -> bool:
        done = [i for i, e in enumerate(self.seen) if e.type == "backup-set-completed"
                and e.correlation_id == event.correlation_id]
        return bool(done) and self.seen.index(event) > done[0]

    def cli(self, *args: str, **env):
        return run_cli(self.settings, *args, timeout=180, **env)

    def restore_secrets(self, *store: str):
        out = self.root / f"restored-{uuid.uuid4().hex[:6]}.json"
        result = self.cli(*store, "restore", "secrets", "--stamp", STAMP, "--key", str(self.root / "key.pem"),
                          "--out", str(out))
        return result, out


@pytest.fixture
def second_s3():
    with moto_s3_server() as server:
        yield server


def test_a_set_is_mirrored_to_a_second_s3_server_and_an_smb_share_and_verified(tmp_path, s3_server, second_s3,
                                                                                smb_server):
    share_dir = f"mirror-{uuid.uuid4().hex[:6]}"
    targets = [s3_target(second_s3, "dr-s3", "dr-copy"),
               {"name": "dr-smb", "kind": "smb", "smb_path": smb_server.unc(share_dir),
                "smb_username": smb_server.username, "smb_password": smb_server.password, "smb_port": smb_server.port}]
    with vhost() as name:
        site = Site(tmp_path, name, s3_server, targets)
        # Given the workers running, When one backup set is made
        with running(site.app()):
            set_id = site.backup()
            # Then both targets report it mirrored with nothing missing, and no job failed
            site.mirrored("dr-s3", set_id)
            site.mirrored("dr-smb", set_id)
        assert not [e for e in site.seen if e.type == "job-failed"]
        # (artifact-mirrored is routed: the catalog audits it, nothing is dead-lettered as unroutable)
        assert dead_letters(site.settings, "mirror") == [] and dead_letters(site.settings, "catalog") == []
        # And the copies hold the same bytes as the primary, object by object
        primary = build_store(site.settings.store)
        for target in site.settings.mirror.targets:
            copy = build_store(target.store_settings())
            keys = [i.key for i in primary.list(f"{STAMP}/")]
            assert keys == [i.key for i in copy.list(f"{STAMP}/")] and any(k.endswith("complete.json") for k in keys)
            for key in keys:
                with primary.open(key) as a, copy.open(key) as b:
                    assert a.read() == b.read(), key
            copy.close()
        # And `mirror verify --read-data` reports both identical
        out = site.cli("mirror", "verify", "--stamp", STAMP, "--read-data")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "dr-s3 (s3://dr-copy): identical" in out.stdout and "dr-smb (smb://" in out.stdout
        assert out.stdout.count("identical") == 2


def test_a_secondary_down_during_three_sets_catches_up_when_it_returns(tmp_path, s3_server):
    with vhost() as name, contextlib.ExitStack() as stack:
        secondary = stack.enter_context(moto_s3_server())
        port = secondary.port
        site = Site(tmp_path, name, s3_server, [s3_target(secondary, "dr-s3", "dr-copy")])
        with running(site.app()):
            first = site.backup()
            site.mirrored("dr-s3", first)
            # Given the secondary stopped
            secondary.stop()
            # When three more sets are made
            sets = [site.backup() for _ in range(3)]
            # Then the primary has them all, the secondary nothing new yet (the mirror job is being retried)
            assert not [e for e in site.seen if e.type == "artifact-mirrored" and e.correlation_id in sets]
            verify = site.cli("mirror", "verify", "--stamp", STAMP)
            assert verify.returncode != 0 and "dr-s3" in verify.stdout + verify.stderr
            # When the secondary comes back (an empty server on the same port: everything must be copied again)
            stack.enter_context(moto_s3_server(port=port))
            # Then the backlog drains: the retried jobs report the target caught up
            for set_id in sets:
                site.mirrored("dr-s3", set_id, timeout=90)
        assert not [e for e in site.seen if e.type == "job-failed"]
        # And `mirror verify` reports both identical
        out = site.cli("mirror", "verify", "--stamp", STAMP, "--read-data")
        assert out.returncode == 0 and "dr-s3 (s3://dr-copy): identical" in out.stdout, out.stdout + out.stderr


@pytest.fixture(scope="module")
def mirrored_site(tmp_path_factory, s3_server):
    """One complete set on the primary, mirrored to a second S3 server; the workers stopped afterwards."""
    root = tmp_path_factory.mktemp("mirrored")
    with vhost() as name, moto_s3_server() as secondary:
        site = Site(root, name, s3_server, [s3_target(secondary, "dr-s3", "dr-copy")])
        with running(site.app()):
            set_id = site.backup()
            site.mirrored("dr-s3", set_id)
        yield site, set_id


def test_a_corrupted_object_on_the_primary_is_detected_and_read_from_the_secondary(mirrored_site):
    site, set_id = mirrored_site
    # Given the stored SystemSecrets.json version altered on the primary (one byte flipped, same size)
    primary = build_store(site.settings.store)
    key = next(i.key for i in primary.list(f"{STAMP}/secrets/") if i.key.endswith("/SystemSecrets.json"))
    with primary.open(key) as stream:
        data = bytearray(stream.read())
    original = bytes(data)
    data[len(data) // 2] ^= 1
    primary.put(key, io.BytesIO(bytes(data)), size=len(data))
    try:
        # When the secrets are restored (no --store: the primary, falling back)
        result, out = site.restore_secrets()
        # Then the restore succeeds from the secondary, saying so and why, and the secret is the original
        assert result.returncode == 0, result.stdout + result.stderr
        assert "from mirror target 'dr-s3'" in result.stderr and "fails verification" in result.stderr
        assert json.loads(out.read_text())["SqlServerPassword"] == CANARY
        assert CANARY not in result.stdout + result.stderr
        # And `--store primary` alone fails on the damaged artifact
        alone, _ = site.restore_secrets("--store", "primary")
        assert alone.returncode != 0
    finally:
        primary.put(key, io.BytesIO(original), size=len(original))
        primary.close()


def test_reads_fall_back_to_the_secondary_when_the_primary_cannot_be_reached(mirrored_site):
    site, set_id = mirrored_site
    # Given the primary's address pointing at a port nobody listens on (the primary site is down)
    down = site.settings.model_copy(update={"store": site.settings.store.model_copy(
        update={"s3_endpoint": f"127.0.0.1:{free_port()}"})})
    out = site.root / "restored-unreachable.json"
    # When the secrets are restored and the set listed
    result = run_cli(down, "restore", "secrets", "--stamp", STAMP, "--key", str(site.root / "key.pem"),
                     "--out", str(out), timeout=180)
    listed = run_cli(down, "artifacts", "list", "--stamp", STAMP, timeout=180)
    # Then both are served by the secondary, saying so
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(out.read_text())["SqlServerPassword"] == CANARY
    assert "from mirror target 'dr-s3'" in result.stderr and "Connection refused" in result.stderr
    assert listed.returncode == 0 and set_id in listed.stdout, listed.stdout + listed.stderr


def test_restore_and_drill_succeed_from_the_secondary_when_the_primary_bucket_is_gone(mirrored_site, s3_server):
    site, set_id = mirrored_site
    # Given the primary bucket deleted with everything in it
    primary = build_store(site.settings.store)
    for info in list(primary.list()):
        primary.delete(info.key)
    import boto3
    boto3.client("s3", endpoint_url=s3_server.url, region_name=s3_server.region,
                 aws_access_key_id=s3_server.access_key,
                 aws_secret_access_key=s3_server.secret_key).delete_bucket(Bucket=site.bucket)
    primary.close()
    # When the secrets are restored from the secondary by name, and through the fallback
    named, out = site.restore_secrets("--store", "dr-s3")
    fallback, out2 = site.restore_secrets()
    # Then both succeed with the original secret
    for result, path in ((named, out), (fallback, out2)):
        assert result.returncode == 0, result.stdout + result.stderr
        assert json.loads(path.read_text())["SqlServerPassword"] == CANARY
    assert "mirror target 'dr-s3'" in fallback.stderr
    # And a drill of the newest complete set passes from the secondary alone (and through the fallback)
    for store, prom in ((("--store", "dr-s3"), "secondary.prom"), ((), "primary.prom")):
        drill = site.cli(*store, "drill", "--stamp", STAMP, "--components", "secrets", "--key",
                         str(site.root / "key.pem"), "--textfile", str(site.root / prom))
        assert drill.returncode == 0 and "drill PASSED" in drill.stdout, drill.stdout + drill.stderr
        assert set_id in drill.stdout
    # And the secondary's drill wrote its own metrics, labelled with the copy, and the primary's the primary's
    secondary, primary = (samples(site.root / name) for name in ("secondary.prom", "primary.prom"))
    assert set(secondary) == {"appsvc_dr_last_secondary_restore_drill_timestamp_seconds",
                              "appsvc_dr_secondary_estimated_rto_seconds"}
    assert secondary["appsvc_dr_last_secondary_restore_drill_timestamp_seconds"][0].labels == \
        {"stamp": STAMP, "store": "dr-s3", "result": "passed"}
    assert set(primary) == {"appsvc_dr_last_restore_drill_timestamp_seconds", "appsvc_dr_estimated_rto_seconds"}
    assert primary["appsvc_dr_last_restore_drill_timestamp_seconds"][0].labels == {"stamp": STAMP, "result": "passed"}
    # And `recover plan` plans the stamp's recovery from the secondary alone, naming that set
    plan = site.cli("--store", "dr-s3", "recover", "plan", "--stamp", STAMP, "--latest", "--skip",
                    "databases,fileshare", "--secrets-out", str(site.root / "recovered-secrets.json"),
                    "--out-dir", str(site.root), "--key", str(site.root / "key.pem"))
    assert plan.returncode == 0 and set_id in plan.stdout, plan.stdout + plan.stderr
    assert not (site.root / "recovered-secrets.json").exists()           # a plan changes nothing
    # And the set is listed from the secondary
    listed = site.cli("artifacts", "list", "--stamp", STAMP, "--store", "dr-s3")
    assert listed.returncode == 0 and set_id in listed.stdout, listed.stdout + listed.stderr


def samples(path) -> dict[str, list]:
    """The samples of a Prometheus textfile by metric name (parsed with prometheus_client's own parser)."""
    from prometheus_client.parser import text_string_to_metric_families
    return {family.name: family.samples for family in text_string_to_metric_families(path.read_text())}
