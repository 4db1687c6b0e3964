"""Session-wide real servers shared by every test folder (started on first use, stopped at the end)."""
from __future__ import annotations

from typing import Iterator

import pytest

from tests.fixtures import started
from tests.fixtures.s3server import S3Server, moto_s3_server
from tests.fixtures.smbd import SmbServer, smbd_server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with started("moto S3 server", moto_s3_server()) as server:
        yield server


@pytest.fixture(scope="session")
def smb_server() -> Iterator[SmbServer]:
    with started("Samba smbd", smbd_server()) as server:
        yield server
