"""Session-wide real servers and a ``store`` fixture that runs each contract test on every backend."""
from __future__ import annotations

import contextlib
import uuid
from typing import Iterator

import pytest

from tests.fixtures.s3server import S3Server
from tests.fixtures.smbd import SmbServer
from workers.storage.base import StorageBackend

CONTRACT_PART_SIZE = 5 * 1024 * 1024     # the S3 minimum, so a ~12 MiB object takes three parts


def make_store(kind: str, request: pytest.FixtureRequest, tmp_path) -> StorageBackend:
    """A fresh, empty store of ``kind``: its own directory, bucket or folder on the share."""
    unique = f"t-{uuid.uuid4().hex[:12]}"
    if kind == "local":
        from workers.storage.local import LocalStore
        return LocalStore(tmp_path / "store")
    if kind == "fallback":      # the read-only fallback over a primary and an (empty) mirror target
        from workers.mirror.sync import expected
        from workers.storage.fallback import with_copies
        from workers.storage.local import LocalStore
        return with_copies(LocalStore(tmp_path / "store"), [("copy", LocalStore(tmp_path / "copy"))],
                           expected=expected)
    if kind == "s3":
        from workers.storage.s3 import S3Store
        s3: S3Server = request.getfixturevalue("s3_server")
        return S3Store(s3.endpoint, s3.access_key, s3.secret_key, unique, region=s3.region, secure=False,
                       create_bucket=True, part_size=CONTRACT_PART_SIZE)
    if kind == "smb":
        from workers.storage.smb import SmbStore
        smb: SmbServer = request.getfixturevalue("smb_server")
        return SmbStore(smb.unc(unique), smb.username, smb.password, port=smb.port, encrypt=True)
    raise ValueError(kind)


@pytest.fixture(params=["local", "fallback", pytest.param("s3", marks=pytest.mark.integration),
                        pytest.param("smb", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[StorageBackend]:
    backend = make_store(request.param, request, tmp_path)
    yield backend
    with contextlib.suppress(Exception):        # free moto's memory and the share; best effort
        for info in list(backend.list("")):
            backend.delete(info.key)
    with contextlib.suppress(Exception):
        backend.close()
