"""The mirror's copy of one object between two S3 servers (two moto processes over HTTP): a recorded artifact
larger than a part goes up as one streamed request signed with the record's SHA-256, lands byte for byte with
its metadata, and one damaged on the primary is never completed on the target (an earlier good copy stays)."""
from __future__ import annotations

import io
import random
import uuid
from datetime import timedelta

import pytest

from tests.fixtures import started
from tests.fixtures.s3server import moto_s3_server
from workers.artifacts.service import ArtifactStore, sha256_of
from workers.artifacts.setmanifest import artifact_key
from workers.mirror.sync import Policy, sync
from workers.storage.s3 import S3Store

pytestmark = pytest.mark.integration
MiB = 1024 * 1024
STAMP = "stamp1"
POLICY = Policy(keep_last=7, keep_within=None, grace=timedelta(hours=6))


@pytest.fixture
def stores(s3_server):
    with started("second moto S3 server", moto_s3_server()) as second:
        bucket = f"mirror-{uuid.uuid4().hex[:8]}"
        primary, target = (S3Store(s.endpoint, s.access_key, s.secret_key, bucket, secure=False, part_size=5 * MiB)
                           for s in (s3_server, second))
        yield primary, target, second
        primary.close()
        target.close()


def digest(store: S3Store, key: str) -> tuple[str, int]:
    with store.open(key) as stream:
        return sha256_of(stream)


def test_a_recorded_artifact_is_copied_as_stored_and_one_damaged_on_the_primary_never_lands(stores):
    primary, target, second = stores
    # Given a recorded artifact of 3 parts' size (plain: no certificate) on the primary
    key = artifact_key(STAMP, "20260101T000000Z-0001", "databases", "big.bak")
    data = random.Random(18).randbytes(15 * MiB + 17)
    ArtifactStore(primary, compress=False).put(key, lambda: io.BytesIO(data))
    # When the target is brought in line
    result = sync(primary, target, STAMP, POLICY)
    # Then the artifact and its record are there, byte for byte, with the primary's metadata, in one request
    # (no multipart upload was opened on the target)
    assert result.corrupt == [] and result.backlog == [] and result.copied == 2
    assert digest(target, key) == digest(primary, key)
    assert target.stat(key).metadata == primary.stat(key).metadata
    assert second.multipart_uploads(target.bucket) == 0
    # Given the artifact then damaged on the primary (one byte flipped, same size; its record unchanged) and the
    # target's copy gone
    with primary.open(key) as stream:
        stored = bytearray(stream.read())
    stored[len(stored) // 2] ^= 1
    primary.put(key, io.BytesIO(bytes(stored)), size=len(stored))
    target.delete(key)
    # When the target is brought in line again
    result = sync(primary, target, STAMP, POLICY)
    # Then the damaged artifact is reported and nothing of it landed on the target
    assert result.corrupt == [key] and result.copied == 0
    assert not target.exists(key)
    # And an earlier object on the target (of another size, so the sync tries to replace it) stays as it was
    target.put(key, io.BytesIO(bytes(stored[:-1])), size=len(stored) - 1)
    earlier = digest(target, key)
    result = sync(primary, target, STAMP, POLICY)
    assert result.corrupt == [key] and digest(target, key) == earlier
