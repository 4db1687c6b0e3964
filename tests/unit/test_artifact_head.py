"""The signed head hash of an artifact (workers/artifacts/head.py): what the upload worker records, and the reader
that proves those bytes before it returns any of them."""
from __future__ import annotations

import hashlib
import io
import os

import pytest

from workers.artifacts import head
from workers.artifacts.head import HeadHash, VerifiedHead, head_facts
from workers.storage.crypto import IntegrityError


def read_all(stream, size: int = 1 << 16) -> bytes:
    out = bytearray()
    while data := stream.read(size):
        out += data
    return bytes(out)


def test_the_head_hash_covers_the_first_bytes_only_and_passes_everything_through(monkeypatch):
    monkeypatch.setattr(head, "HEAD_BYTES", 100_000)
    data = os.urandom(250_000)
    hasher = HeadHash(io.BytesIO(data))
    assert read_all(hasher, 7_000) == data
    assert hasher.facts() == {"head_sha256": hashlib.sha256(data[:100_000]).hexdigest(), "head_size": 100_000}
    short = HeadHash(io.BytesIO(data[:500]))
    read_all(short)
    assert short.facts() == {"head_sha256": hashlib.sha256(data[:500]).hexdigest(), "head_size": 500}


def test_a_verified_head_returns_every_byte_once_its_first_bytes_match():
    data = os.urandom(3 << 20)
    digest = hashlib.sha256(data[:(2 << 20) + 5]).hexdigest()
    assert read_all(VerifiedHead(io.BytesIO(data), digest, (2 << 20) + 5)) == data


@pytest.mark.parametrize("change", ["a byte in the head", "a shorter artifact"])
def test_a_head_that_does_not_match_is_refused_before_any_byte_is_returned(change):
    data = bytearray(os.urandom(1 << 20))
    digest = hashlib.sha256(data[:4096]).hexdigest()
    if change == "a byte in the head":
        data[100] ^= 1
    else:
        data = data[:1000]
    source = io.BytesIO(bytes(data))
    with pytest.raises(IntegrityError, match="head hash"):
        VerifiedHead(source, digest, 4096)
    assert source.tell() <= 4096                               # nothing read past the head


@pytest.mark.parametrize("metadata", [None, {}, {"head_sha256": "x"}, {"head_sha256": "x", "head_size": "9"},
                                      {"head_sha256": "x", "head_size": 0},
                                      {"head_sha256": "x", "head_size": head.HEAD_BYTES + 1}])
def test_records_without_a_usable_head_hash_have_none(metadata):
    assert head_facts(metadata) is None


def test_a_records_head_hash_is_read_back():
    assert head_facts({"head_sha256": "ab" * 32, "head_size": 1234, "lsn": "x"}) == ("ab" * 32, 1234)
