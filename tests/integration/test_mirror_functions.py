"""A backup set with the Function Apps component (Azurite), mirrored by the real workers on RabbitMQ from a
primary S3 bucket (moto) to a second S3 server; the primary bucket deleted; the functions restored into a new
account, and drilled, from the secondary alone (`--store NAME`)."""
from __future__ import annotations

import uuid

import boto3
import pytest

from contracts import new_backup_set_id
from tests.fixtures.rabbit import running, run_cli, settings_for, tap, wait_for
from tests.fixtures.s3server import moto_s3_server
from tests.fixtures.azurite import empty_account
from tests.integration.test_functions_azurite import KiB, SMALL, backup_due, picture, populate
from tests.integration.test_mirror_targets import s3_target
from tests.unit.certs import make_cert, signing_settings
from workers.app import App
from workers.mirror.sync import compare
from workers.mirror.handler import policy_for, target_store
from workers.runtime.publisher import Publisher
from workers.storage.factory import build_store

pytestmark = pytest.mark.integration


def test_a_set_with_functions_mirrored_restores_and_drills_from_the_secondary_after_the_primary_is_gone(
        rabbit_vhost, tmp_path, azurite, s3_server):
    tag = uuid.uuid4().hex[:6]
    cs = azurite.connection_string("source")
    empty_account(cs)                    # the session's Azurite is shared: this set holds only what populate made
    populate(cs, tag)
    expected = picture(cs, tag)
    cert = make_cert("mirror-functions")
    (tmp_path / "cert.pem").write_bytes(cert.cert_pem)
    (tmp_path / "key.pem").write_bytes(cert.key_pem())
    bucket = f"primary-{uuid.uuid4().hex[:8]}"
    store = {"kind": "s3", "s3_endpoint": s3_server.endpoint, "s3_access_key": s3_server.access_key,
             "s3_secret_key": s3_server.secret_key, "s3_bucket": bucket, "s3_region": s3_server.region,
             "s3_secure": False}
    with moto_s3_server() as secondary:
        settings = settings_for(rabbit_vhost, store=store, mirror={"targets": [s3_target(secondary, "dr-s3", "dr-copy")]},
                                encryption={"certificate": str(tmp_path / "cert.pem"), **signing_settings(tmp_path)},
                                functions={"accounts": [{"name": "source", "connection_string": cs}],
                                           "large_blob": 512 * KiB, "pack_size": 1024 * KiB})
        settings = settings.model_copy(update={"components": ("functions",)})
        set_id = new_backup_set_id()
        seen: list = []
        # Given the functions, catalog and mirror workers, When a backup set of the functions component is due
        with running(App(settings, ["functions", "catalog", "mirror",
                                    tap(seen, "backup-set-completed", "artifact-mirrored", "job-failed",
                                        "functions-backed-up")])):
            with Publisher(settings.broker) as pub:
                pub.publish(backup_due(set_id))
            wait_for(lambda: any(e.type == "backup-set-completed" for e in seen)
                     or any(e.type == "job-failed" for e in seen), 180, what="the set to complete")
            done = [i for i, e in enumerate(seen) if e.type == "backup-set-completed"]
            # Then the secondary reports the set mirrored with nothing missing once it completed
            wait_for(lambda: any(e.type == "artifact-mirrored" and e.payload.backlog == 0 and i > done[0]
                                 for i, e in enumerate(seen)), 120, interval=0.3, what="the set mirrored")
        assert not [e.payload for e in seen if e.type == "job-failed"]
        primary, copy = build_store(settings.store), target_store(settings.mirror.targets[0])
        policy = policy_for(settings.mirror.targets[0], settings.retention)
        packs = [i.key for i in copy.list("stamp1/functions-blobs/source/packs/")]
        assert packs and compare(primary, copy, "stamp1", policy, read_data=True).missing == []
        # When the primary bucket is deleted with everything in it
        for info in list(primary.list()):
            primary.delete(info.key)
        boto3.client("s3", endpoint_url=s3_server.url, region_name=s3_server.region,
                     aws_access_key_id=s3_server.access_key,
                     aws_secret_access_key=s3_server.secret_key).delete_bucket(Bucket=bucket)
        # And the functions are restored from the secondary alone into a new, empty account
        empty_account(azurite.connection_string("target"))
        restored = run_cli(settings, "--store", "dr-s3", "restore", "functions", "--stamp", "stamp1", "--set", set_id,
                           "--target-connection-string-env", "NEW_ACCOUNT_CS", "--key", str(tmp_path / "key.pem"),
                           timeout=300, NEW_ACCOUNT_CS=azurite.connection_string("target"))
        # Then it succeeds, and the new account holds what the source held: blobs, properties, queues, entities
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert f"{SMALL + 3} blobs" in restored.stdout and "counts verified" in restored.stdout
        assert picture(azurite.connection_string("target"), tag) == expected
        # And a drill of the set passes from the secondary alone
        drill = run_cli(settings, "--store", "dr-s3", "drill", "--stamp", "stamp1", "--set", set_id, "--key",
                        str(tmp_path / "key.pem"), timeout=300)
        assert drill.returncode == 0 and f"{SMALL + 3} blobs (every SHA-256 verified)" in drill.stdout, \
            drill.stdout + drill.stderr
        # And nothing was read from the (gone) primary
        assert "from mirror target" not in restored.stderr + drill.stderr
        copy.close()
        primary.close()
