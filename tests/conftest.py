"""Session-wide real servers shared by every test folder (started on first use, stopped at the end)."""
from __future__ import annotations

from typing import Iterator

import pytest

from tests.fixtures import started
from tests.fixtures.azurite import AzuriteServer, azurite_server
from tests.fixtures.rabbit_node import RabbitNode, rabbit_node
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


@pytest.fixture(scope="session")
def private_rabbit() -> Iterator[RabbitNode]:
    """A RabbitMQ node of this run only, for tests that restart the broker (never the shared one)."""
    with started("private RabbitMQ node", rabbit_node()) as node:
        yield node


@pytest.fixture(scope="session")
def azurite() -> Iterator[AzuriteServer]:
    """Azurite (Azure Storage emulator) with the accounts ``source`` and ``target``, in memory."""
    with started("Azurite (bash deploy/setup.sh installs it)", azurite_server()) as server:
        yield server
