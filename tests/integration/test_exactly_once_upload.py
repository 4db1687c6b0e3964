"""Exactly one upload per artifact on a real S3 server (moto) with signed job leases, on the real RabbitMQ."""
from __future__ import annotations

import os
import uuid

import pytest

from contracts import ArtifactReady, ArtifactReadyPayload
from tests.fixtures.rabbit import dead_letters, running, settings_for, tap, wait_for
from tests.unit.certs import signing_settings
from tests.unit.forge import configured_store, plan_set
from workers.app import App
from workers.runtime.publisher import Publisher

pytestmark = pytest.mark.integration
STAMP = "stamp1"


def test_the_same_artifact_ready_twice_at_once_is_uploaded_once_to_s3(rabbit_vhost, tmp_path, s3_server):
    # Given two upload workers on an S3 store (leases in the set, signed) and a 40 MiB staged file
    settings = settings_for(rabbit_vhost, store={
        "kind": "s3", "s3_endpoint": s3_server.endpoint, "s3_access_key": s3_server.access_key,
        "s3_secret_key": s3_server.secret_key, "s3_bucket": f"once-{uuid.uuid4().hex[:10]}",
        "s3_region": s3_server.region, "s3_secure": False},
        encryption=signing_settings(tmp_path), staging={"database_dir": str(tmp_path / "staging")})
    set_id = "20261203T050000Z-0dce0005"
    plan_set(configured_store(settings).backend, set_id, "databases", stamp=STAMP)
    staged = tmp_path / "staging" / "orders.dump"
    staged.parent.mkdir()
    staged.write_bytes(os.urandom(40 * 1024 * 1024))
    ready = [ArtifactReady(source="test", stamp=STAMP, correlation_id=set_id, payload=ArtifactReadyPayload(
        component="databases", name="orders.dump", staged_path=str(staged), size=staged.stat().st_size))
        for _ in range(2)]                                # two events (two producers' requests), one artifact
    seen: list = []
    first, second = App(settings, ["upload", tap(seen, "artifact-stored")]), App(settings, ["upload"])
    with running(first), running(second):
        # When both arrive at once
        with Publisher(settings.broker) as pub:
            for event in ready:
                pub.publish(event)
        wait_for(lambda: seen, 60, what="artifact stored")
        wait_for(lambda: sum(a.metrics.consumed.labels("upload", "artifact-ready", o)._value.get()
                             for a in (first, second) for o in ("ok", "duplicate")) == 2, 30, what="both handled")
    # Then it was uploaded once; the other request was a duplicate (counted), or found it stored
    uploaded = sum(a.metrics.bytes.labels("upload", "uploaded-s3")._value.get() for a in (first, second))
    assert uploaded == staged.stat().st_size
    assert len([e for e in seen if not e.payload.deduplicated]) == 1
    duplicates = sum(a.metrics.consumed.labels("upload", "artifact-ready", "duplicate")._value.get()
                     for a in (first, second))
    assert duplicates + len([e for e in seen if e.payload.deduplicated]) == 1
    assert dead_letters(settings, "upload") == []
    # And no lease is left in the set
    backend = configured_store(settings).backend
    assert [i.key for i in backend.list(f"{STAMP}/{set_id}/jobs/")] == []
