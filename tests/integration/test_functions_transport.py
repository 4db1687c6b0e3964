"""The blob client's direct HTTP path (workers.functions.transport), against Azurite: listings and downloads go
straight to urllib3 and return what the service holds; a connection lost mid-request is retried by the SDK like
any other; an HTTPS account with a private CA (as Azure Stack Hub's) is verified against REQUESTS_CA_BUNDLE, and
refused without it."""
from __future__ import annotations

import hashlib
import uuid

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.storage.blob import BlobServiceClient, ContentSettings

from tests.fixtures.azurite import azurite_server
from tests.fixtures.smtp_server import self_signed_tls
from tests.fixtures.storage_proxy import storage_proxy
from workers.functions.client import open_account

pytestmark = pytest.mark.integration


def test_listings_and_downloads_take_the_direct_path_and_return_the_content(azurite):
    # Given a container with blobs of several sizes, metadata and a content type
    cs, name = azurite.connection_string("source"), f"direct-{uuid.uuid4().hex[:8]}"
    container = BlobServiceClient.from_connection_string(cs).create_container(name)
    bodies = {f"b{i}": hashlib.sha256(str(i).encode()).digest() * (1 + 4000 * i) for i in range(3)}
    for blob, body in bodies.items():
        container.upload_blob(blob, body, metadata={"k": blob},
                              content_settings=ContentSettings(content_type="application/json"))
    clients = open_account("source", cs, retries=1, timeout=30)
    try:
        # When the backup's client lists them and downloads each
        listed = {p.name: p for p in clients.blobs.get_container_client(name).list_blobs(include=["metadata"])}
        got = {b: clients.blobs.get_blob_client(name, b).download_blob(max_concurrency=1).readall() for b in listed}
        # Then every byte, property and metadata value is the service's, and the requests went the direct way
        assert got == bodies
        assert {b: (p.metadata, p.content_settings.content_type) for b, p in listed.items()} == \
            {b: ({"k": b}, "application/json") for b in bodies}
        assert clients.blob_session.direct_count >= 1 + len(bodies)
    finally:
        clients.close()
        container.delete_container()        # the session's account is shared: leave nothing behind


def test_a_connection_lost_mid_request_is_retried(azurite):
    cs = azurite.connection_string("source")
    container = BlobServiceClient.from_connection_string(cs).create_container(f"dropped-{uuid.uuid4().hex[:8]}")
    container.upload_blob("b", b"payload")
    name = container.container_name
    with storage_proxy(azurite.host, azurite.blob_port) as proxy:
        clients = open_account("source", azurite.connection_string(
            "source", ports=(proxy.port, azurite.queue_port, azurite.table_port)), retries=3, timeout=30,
            backoff=0.05)
        try:
            # When the next two requests lose their connection before any answer
            proxy.drop(2)
            data = clients.blobs.get_blob_client(name, "b").download_blob(max_concurrency=1).readall()
        finally:
            clients.close()
            container.delete_container()
    # Then the SDK retried them and the download completed
    assert data == b"payload" and proxy.drop_served == 2


def test_https_with_a_private_ca_is_verified_with_the_environment_bundle(tmp_path, monkeypatch):
    # Given Azurite serving HTTPS with a certificate no public CA signed
    self_signed_tls(tmp_path)
    cert, key = tmp_path / "smtp-cert.pem", tmp_path / "smtp-key.pem"
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with azurite_server(tls=(cert, key)) as az:
        cs = az.connection_string("source")
        BlobServiceClient.from_connection_string(cs, connection_verify=str(cert)).create_container("tls").upload_blob(
            "b", b"over tls")
        # When the CA is not named, the certificate is refused
        clients = open_account("source", cs, retries=0, timeout=30)
        try:
            with pytest.raises(ServiceRequestError, match="CERTIFICATE_VERIFY_FAILED"):
                list(clients.blobs.list_containers())
        finally:
            clients.close()
        # When REQUESTS_CA_BUNDLE names it, listing and download succeed (verified, through the direct path)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        clients = open_account("source", cs, retries=0, timeout=30)
        try:
            assert [c.name for c in clients.blobs.list_containers()] == ["tls"]
            assert clients.blobs.get_blob_client("tls", "b").download_blob().readall() == b"over tls"
            assert clients.blob_session.direct_count >= 2
        finally:
            clients.close()
