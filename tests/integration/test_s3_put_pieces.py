"""``S3Store.put_pieces``: an object in memory as pieces, one signed PUT (``workers.storage.s3stream``), against a
moto server that checks signatures."""
from __future__ import annotations

import hashlib
import io
import os
import secrets

import pytest

from tests.fixtures import started
from tests.fixtures.s3server import moto_s3_server
from workers.storage.base import StoragePermissionDenied
from workers.storage.s3 import S3Store

pytestmark = pytest.mark.integration


def read(store: S3Store, key: str) -> bytes:
    with store.open(key) as stream:
        return stream.read()


def test_pieces_land_as_one_object_signed_with_the_callers_sha256_and_a_wrong_secret_is_refused():
    # Given an S3 server that checks signatures, and a valid key pair on it
    with started("moto S3 server", moto_s3_server()) as server:
        access_key, secret_key = server.create_access_key()
        server.enforce_auth()
        store = S3Store(server.endpoint, access_key, secret_key, "pieces", region=server.region, secure=False)
        body = os.urandom(3 << 20)
        view = memoryview(body)
        pieces = [b"head", view[:1 << 20], bytes(view[1 << 20:2 << 20]), view[2 << 20:], b"tail"]
        whole = b"".join(pieces)
        sha = hashlib.sha256(whole).hexdigest()
        # When they are put as pieces (metadata too), and once more without a configured region (looked up once)
        info = store.put_pieces("stamp1/fileshare/packs/ab/c-d_e.bin", pieces, len(whole), {"dr-format": "2"}, sha256=sha)
        plain = S3Store(server.endpoint, access_key, secret_key, "pieces", secure=False)
        assert store.sends_pieces and plain.sends_pieces     # without credentials: joined, through the SDK
        plain.put_pieces("joined.bin", pieces, len(whole), sha256=sha)
        # Then both objects hold exactly the bytes, with the metadata, and the put reported the size
        assert info.size == len(whole) and read(store, "stamp1/fileshare/packs/ab/c-d_e.bin") == whole == read(store, "joined.bin")
        assert store.stat("stamp1/fileshare/packs/ab/c-d_e.bin").metadata == {"dr-format": "2"}
        # And a wrong secret is refused as a permission problem, naming the settings and never the secret
        wrong = secrets.token_urlsafe(16)
        bad = S3Store(server.endpoint, access_key, wrong, "pieces", region=server.region, secure=False)
        with pytest.raises(StoragePermissionDenied) as caught:
            bad.put_pieces("x.bin", [b"x"], 1, sha256=hashlib.sha256(b"x").hexdigest())
        assert "APPSVC_DR_STORE__S3_SECRET_KEY" in caught.value.hint and wrong not in str(caught.value)
        assert not store.exists("x.bin")
        # And an ordinary put still works next to it
        store.put("c.bin", io.BytesIO(b"c"), 1)
        assert read(store, "c.bin") == b"c"
