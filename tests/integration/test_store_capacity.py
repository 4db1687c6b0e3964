"""Capacity on real stores: an SMB share that reports a small volume (smbd with Samba's `max disk size`, measured
through FileFsFullSizeInformation) is forecast not to fit the next set before a set fails for space; an S3 bucket
(moto) is sized by its configured quota; `config check --connect` prints the sizing like the platform's docs."""
from __future__ import annotations

import io
import random
import re
import uuid

import pytest

from tests.fixtures.rabbit import run_cli, settings_for
from tests.fixtures.smbd import SMALL_SHARE_MB
from tests.unit.test_retention import STAMP, make_set
from workers.artifacts.capacity import forecast
from workers.artifacts.service import ArtifactStore
from workers.artifacts.setmanifest import artifact_key
from workers.storage.capacity import measure
from workers.storage.s3 import S3Store
from workers.storage.smb import SmbStore

pytestmark = pytest.mark.integration
MB = 1024 * 1024


def big_set(store: ArtifactStore, days: float, size: int) -> str:
    """A complete set holding one incompressible database artifact of ``size`` bytes."""
    set_id = make_set(store, days)
    store.put(artifact_key(STAMP, set_id, "databases", "big.bak"),
              lambda: io.BytesIO(random.Random(set_id).randbytes(size)))
    return set_id


def test_a_small_smb_share_is_forecast_full_before_the_next_set_fails(smb_server):
    # Given a share whose volume reports 2 MB, holding one complete set of ~0.7 MB
    store = SmbStore(smb_server.unc(f"cap-{uuid.uuid4().hex[:6]}", share=smb_server.small_share),
                     smb_server.username, smb_server.password, port=smb_server.port)
    artifacts = ArtifactStore(store, compress=False)
    try:
        big_set(artifacts, 2, 700_000)
        # When its capacity is measured and the next set forecast
        first = forecast(store, STAMP, 7, measure(store))
        # Then the free space comes from the share (FileFsFullSizeInformation, capped at 2 MB) and another set fits
        assert first.space.measured_by == "FileFsFullSizeInformation"
        assert first.space.total <= SMALL_SHARE_MB * MB and first.space.free < SMALL_SHARE_MB * MB
        assert first.fits_next and first.sets_fit >= 1
        # When a second, larger set lands (the share still takes it: Samba only reports the limit)
        big_set(artifacts, 1, 1_100_000)
        second = forecast(store, STAMP, 7, measure(store))
        # Then the third is forecast not to fit: the warning comes before any set fails for space
        assert second.fits_next is False and second.sets_fit == 0
        assert second.next_set > second.space.free
        assert re.search(r"7 sets × ~[\d.]+ KB = [\d.]+ MB needed, [\d.]+ KB free \(FileFsFullSizeInformation\); "
                         r"about 0 more set\(s\) fit", second.describe())
    finally:
        store.close()


def test_an_s3_bucket_is_sized_by_its_quota_and_config_check_prints_the_sizing(s3_server):
    # Given a bucket with two complete sets of ~1 MB and a configured quota of 5 MB
    bucket = f"cap-{uuid.uuid4().hex[:8]}"
    store = S3Store(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, bucket, region=s3_server.region,
                    secure=False)
    artifacts = ArtifactStore(store, compress=False)
    for days in (2, 1):
        big_set(artifacts, days, 1_000_000)
    # When it is measured, Then the free space is the quota minus what the bucket holds
    space = measure(store, 5 * MB)
    used = sum(i.size for i in store.list(""))
    assert space.measured_by == "quota" and space.used == used and space.free == 5 * MB - used
    result = forecast(store, STAMP, 7, space)
    assert result.sets_fit == space.free // result.next_set and result.fits_next
    # When `config check --connect` runs with that store
    settings = settings_for("/", database={"engine": "postgres"}, store={
        "kind": "s3", "s3_endpoint": s3_server.endpoint, "s3_access_key": s3_server.access_key,
        "s3_secret_key": s3_server.secret_key, "s3_bucket": bucket, "s3_region": s3_server.region,
        "s3_secure": False, "quota_bytes": 5 * MB})
    out = run_cli(settings, "config", "check", "--connect")
    # Then it prints the sizing the way the platform's docs do
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(rf"^Capacity of primary \(s3://{bucket}\): stamp1: 7 sets × ~1\.\d MB = 7\.\d MB needed, "
                     r"3\.\d MB free \(quota\); about 2 more set\(s\) fit$", out.stdout, re.M), out.stdout
