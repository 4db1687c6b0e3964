"""Which stored SystemSecrets.json version is "newest": never one dated in the future or named by an outsider
(real local store, real encryption with a test certificate)."""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from datetime import datetime, timedelta, timezone

import pytest

from tests.unit.certs import make_cert
from workers.artifacts.service import ArtifactStore
from workers.runtime.errors import PermanentError
from workers.secrets.versions import CLOCK_SKEW, check_rotated_at, latest, version_id, version_key, versions
from workers.storage.local import LocalStore


def put(store: ArtifactStore, key: str, data: bytes) -> None:
    store.put(key, lambda: contextlib.nullcontext(io.BytesIO(data)), require_encryption=True)


def vid(when: datetime, data: bytes) -> str:
    return version_id(when, hashlib.sha256(data).hexdigest())


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(LocalStore(tmp_path / "store"), certificate=make_cert("versions").certificate)


def test_latest_ignores_future_dated_and_foreign_names_with_a_warning(store, caplog):
    now = datetime.now(timezone.utc)
    # Given a genuine version from an hour ago, one a few minutes ahead (clock skew), one dated 9999
    # and one under a name this worker never writes
    genuine, skewed = vid(now - timedelta(hours=1), b'{"a": 1}'), vid(now + timedelta(minutes=3), b'{"a": 2}')
    forged = vid(now.replace(year=9999), b'{"forged": 1}')
    for version, data in ((genuine, b'{"a": 1}'), (skewed, b'{"a": 2}'), (forged, b'{"forged": 1}')):
        put(store, version_key("stamp1", version), data)
    put(store, "stamp1/secrets/zzzz-newest/SystemSecrets.json", b'{"forged": 2}')
    caplog.set_level(logging.WARNING)
    # When the newest version is looked up
    newest = latest(store, "stamp1")
    # Then the skewed one (within the allowance) wins, the 9999 one and the foreign name are ignored and reported
    assert newest is not None and newest.version_id == skewed
    assert [v.version_id for v in versions(store, "stamp1")] == [genuine, skewed, forged]
    assert forged in caplog.text and "in the future" in caplog.text and "zzzz-newest" in caplog.text


def test_only_future_dated_versions_means_none_stored(store):
    put(store, version_key("stamp1", vid(datetime.now(timezone.utc) + timedelta(days=1), b"{}")), b'{"x": 1}')
    assert latest(store, "stamp1") is None


def test_a_rotation_dated_beyond_the_skew_is_refused_with_a_hint():
    now = datetime.now(timezone.utc)
    check_rotated_at(now + CLOCK_SKEW - timedelta(seconds=30))            # a clock a little ahead: fine
    with pytest.raises(PermanentError, match="in the future") as refused:
        check_rotated_at(now + CLOCK_SKEW + timedelta(minutes=1))
    assert "clock" in refused.value.hint
