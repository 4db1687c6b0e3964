"""One contract for every StorageBackend: local directory, S3 (moto over real HTTP), SMB (real smbd)."""
from __future__ import annotations

import contextlib
import hashlib
import io
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.contract.conftest import CONTRACT_PART_SIZE, make_store
from workers.runtime.errors import is_permanent
from workers.storage.base import InvalidArgument, ObjectNotFound, StorageBackend

MiB = 1024 * 1024


class PatternStream(io.RawIOBase):
    """``size`` deterministic pseudo-random bytes, generated while read (never held as one bytes object)."""

    def __init__(self, size: int, seed: int = 1) -> None:
        super().__init__()
        self._block = random.Random(seed).randbytes(MiB + 7)
        self.size, self.pos, self.sha256 = size, 0, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = min(len(buffer), self.size - self.pos, 256 * 1024)
        start = self.pos % len(self._block)
        chunk = (self._block[start:] + self._block[:start])[:n]
        buffer[:n] = chunk
        self.sha256.update(chunk)
        self.pos += n
        return n


class BrokenStream(PatternStream):
    """Delivers ``fail_after`` bytes, then raises like a dying source (a database backup, a file share)."""

    def __init__(self, fail_after: int) -> None:
        super().__init__(fail_after * 2)
        self.fail_after = fail_after
        self.error = RuntimeError("source stream broke")

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self.pos >= self.fail_after:
            raise self.error
        return super().readinto(memoryview(buffer)[: self.fail_after - self.pos])


def read_digest(store: StorageBackend, key: str) -> tuple[int, str]:
    sha, size = hashlib.sha256(), 0
    with store.open(key) as stream:
        while chunk := stream.read(MiB):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()


def read_all(store: StorageBackend, key: str) -> bytes:
    with store.open(key) as stream:
        return stream.read()


def backing_dir(store: StorageBackend, request: pytest.FixtureRequest) -> Path | None:
    """The local directory behind a local or SMB store (None for S3); a fallback store's primary's."""
    store = getattr(store, "primary", store)
    if store.name.startswith("file://"):
        return Path(store.root)  # type: ignore[attr-defined]
    if store.name.startswith("smb://"):
        return request.getfixturevalue("smb_server").path / store.name.rsplit("/", 1)[1]
    return None


def test_is_a_storage_backend_without_credentials_in_its_name(store: StorageBackend) -> None:
    # Given a store / When we look at its name, repr and flags / Then they describe it without secrets
    assert isinstance(store, StorageBackend)
    assert isinstance(store.atomic_rename, bool)
    assert store.name.split("://")[0] in ("file", "s3", "smb")
    for text in (store.name, repr(store)):
        assert "secret" not in text and "Pw-" not in text and "@" not in text


@pytest.mark.parametrize("payload", [b"", b"hello, world\n"], ids=["empty", "small"])
@pytest.mark.parametrize("declare_size", [True, False], ids=["sized", "unsized"])
def test_round_trip_small_objects(store: StorageBackend, payload: bytes, declare_size: bool) -> None:
    # Given a small payload
    # When it is put (with or without its size) and read back
    info = store.put("set-1/db/small.bin", io.BytesIO(payload), size=len(payload) if declare_size else None)
    # Then the bytes and the reported size match
    assert read_all(store, "set-1/db/small.bin") == payload
    assert info.key == "set-1/db/small.bin" and info.size == len(payload)
    assert store.stat("set-1/db/small.bin").size == len(payload)


@pytest.mark.parametrize("size", [0, 3 * MiB, CONTRACT_PART_SIZE + 1], ids=["empty", "one-request", "parts"])
def test_put_with_the_callers_sha256_stores_the_same_bytes(store: StorageBackend, size: int) -> None:
    # Given bytes whose SHA-256 the caller computed already (one S3 request, or more than one part)
    data = random.Random(size).randbytes(size)
    digest = hashlib.sha256(data).hexdigest()
    # When they are put with it
    info = store.put("set-1/packs/known", io.BytesIO(data), size=size, sha256=digest, metadata={"k": "v"})
    # Then they are stored as given, and put reports what stat does (S3 answers without a HEAD request here)
    assert info.size == size and read_digest(store, "set-1/packs/known") == (size, digest)
    stat = store.stat("set-1/packs/known")
    assert (info.key, info.size, info.metadata, info.etag) == (stat.key, stat.size, stat.metadata, stat.etag)
    assert abs(info.modified - stat.modified) < timedelta(minutes=1) and info.modified.tzinfo is not None


def test_round_trip_multipart_sized_object_streamed(store: StorageBackend) -> None:
    # Given a ~12 MiB stream (more than two S3 parts of 5 MiB), generated on the fly
    source = PatternStream(12 * MiB + 12345, seed=7)
    assert source.size > 2 * CONTRACT_PART_SIZE
    # When it is put without a declared size
    info = store.put("set-1/big.bak", source)
    # Then reading it back in chunks yields the same bytes
    assert info.size == source.size
    assert read_digest(store, "set-1/big.bak") == (source.size, source.sha256.hexdigest())


def test_metadata_round_trips_and_is_replaced_on_overwrite(store: StorageBackend) -> None:
    # Given metadata of the kinds the workers write
    meta = {"sha256": "ab" * 32, "backup-set": "0d6f-42", "content-type": "application/zstd", "n": "a b  c"}
    # When an object is put with it
    put_info = store.put("set-1/meta.bin", io.BytesIO(b"x"), metadata=meta)
    # Then put and stat report it exactly
    assert put_info.metadata == meta
    assert store.stat("set-1/meta.bin").metadata == meta
    # When it is overwritten without metadata / Then the old metadata is gone
    store.put("set-1/meta.bin", io.BytesIO(b"y"))
    assert store.stat("set-1/meta.bin").metadata == {}


def test_stat_reports_size_and_utc_modification_time(store: StorageBackend) -> None:
    # Given an object written just now
    store.put("a/b.txt", io.BytesIO(b"12345"))
    # When it is stat-ed
    info = store.stat("a/b.txt")
    # Then size and a recent, timezone-aware UTC time are reported
    assert (info.key, info.size) == ("a/b.txt", 5)
    assert info.modified.utcoffset() == timedelta(0)
    assert abs(datetime.now(timezone.utc) - info.modified) < timedelta(minutes=5)


def test_list_is_recursive_sorted_and_filtered_by_prefix(store: StorageBackend) -> None:
    # Given objects in nested "directories", written out of order
    keys = ["b/x", "a/c/d", "ab", "a.txt", "a/b", "a/c-e"]
    for key in keys:
        store.put(key, io.BytesIO(key.encode()))
    # When listing with different prefixes / Then keys come back sorted, recursive, prefix-filtered
    assert [i.key for i in store.list()] == sorted(keys)
    assert [i.key for i in store.list("a/")] == ["a/b", "a/c-e", "a/c/d"]
    assert [i.key for i in store.list("a")] == ["a.txt", "a/b", "a/c-e", "a/c/d", "ab"]
    assert [i.key for i in store.list("a/c")] == ["a/c-e", "a/c/d"]
    assert list(store.list("nothing/here/")) == []
    assert {i.key: i.size for i in store.list("b/")} == {"b/x": 3}


def test_delete_is_idempotent_and_exists_follows(store: StorageBackend) -> None:
    # Given an object with metadata, and one beside it
    store.put("d/obj", io.BytesIO(b"data"), metadata={"k": "v"})
    store.put("d/keep", io.BytesIO(b"keep"))
    assert store.exists("d/obj")
    # When it is deleted twice, and a never-written key is deleted
    store.delete("d/obj")
    store.delete("d/obj")
    store.delete("d/never-written")
    store.delete("d")                              # a "directory" is not an object: nothing to delete
    # Then it is gone everywhere
    assert not store.exists("d/obj")
    assert [i.key for i in store.list("d/")] == ["d/keep"]
    with pytest.raises(ObjectNotFound):
        store.stat("d/obj")


def test_close_is_idempotent_and_a_closed_store_reconnects_when_used(store: StorageBackend) -> None:
    # Given a store that has been used (connected, for a network store)
    store.put("c/k", io.BytesIO(b"kept"))
    # When it is closed, twice, and a closed store is closed again through contextlib.closing
    store.close()
    store.close()
    with contextlib.closing(store):
        # Then nothing is lost: used again it reconnects and reads, writes and lists as before
        assert read_all(store, "c/k") == b"kept"
        store.put("c/l", io.BytesIO(b"new"))
        assert [i.key for i in store.list("c/")] == ["c/k", "c/l"]


def test_overwrite_replaces_the_content(store: StorageBackend) -> None:
    # Given an object / When the same key is put again with other bytes / Then readers see the new bytes
    store.put("o/k", io.BytesIO(b"first version"))
    store.put("o/k", io.BytesIO(b"second"))
    assert read_all(store, "o/k") == b"second"
    assert store.stat("o/k").size == 6
    assert [i.key for i in store.list("o/")] == ["o/k"]


def test_missing_objects_raise_object_not_found(store: StorageBackend) -> None:
    # Given a store holding only "dir/child"
    store.put("dir/child", io.BytesIO(b"1"))
    for key in ("missing", "dir/missing", "no/such/dir/x", "dir"):
        # When stat/open/exists look for a missing key (or a "directory") / Then ObjectNotFound, permanent
        with pytest.raises(ObjectNotFound) as caught:
            store.stat(key)
        assert is_permanent(caught.value) and caught.value.hint
        with pytest.raises(ObjectNotFound):
            with store.open(key):
                pass
        assert store.exists(key) is False


BAD_KEYS = ["", "/abs", "..", "a/../b", "a/./b", "a//b", "a/", "a\\b", "a:b", "x\x00y", "name.partial-123",
            "dir/name.drmeta", "trailing.", " lead"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys_are_rejected_as_permanent_errors(store: StorageBackend, key: str) -> None:
    # Given an invalid key / When any operation uses it / Then InvalidArgument (permanent) with a hint
    for call in (lambda: store.put(key, io.BytesIO(b"x")), lambda: store.stat(key), lambda: store.delete(key),
                 lambda: store.exists(key), lambda: store.open(key).__enter__()):
        with pytest.raises(InvalidArgument) as caught:
            call()
        assert is_permanent(caught.value) and caught.value.hint
    assert list(store.list()) == []


@pytest.mark.parametrize("meta", [{"Upper": "v"}, {"under_score": "v"}, {"k": " padded"}, {"k": "naïve"},
                                  {"k": ""}, {"k": "x" * 3000}])
def test_invalid_metadata_is_rejected(store: StorageBackend, meta: dict[str, str]) -> None:
    # Given metadata some backend could not round-trip / When put / Then InvalidArgument and nothing stored
    with pytest.raises(InvalidArgument):
        store.put("m", io.BytesIO(b"x"), metadata=meta)
    assert not store.exists("m")


@pytest.mark.parametrize("known", [False, True], ids=["unsized", "size-and-sha256"])
def test_failing_source_leaves_no_partial_object(store: StorageBackend, request: pytest.FixtureRequest,
                                                 known: bool) -> None:
    # Given an existing object and a source that dies after 7 MiB (mid multipart upload on S3; with its size and
    # SHA-256 declared, mid one streamed request)
    store.put("set/obj.bak", io.BytesIO(b"previous good copy"), metadata={"v": "1"})
    whole = PatternStream(14 * MiB)
    while whole.read(MiB):
        pass
    declared = {"size": whole.size, "sha256": whole.sha256.hexdigest()} if known else {}
    broken = BrokenStream(fail_after=7 * MiB)
    # When a new object and an overwrite are put from such sources
    with pytest.raises(RuntimeError) as caught:
        store.put("set/new.bak", broken, **declared)
    assert caught.value is broken.error                          # the caller's error, unchanged
    with pytest.raises(RuntimeError):
        store.put("set/obj.bak", BrokenStream(fail_after=7 * MiB), metadata={"v": "2"}, **declared)
    # Then no half object is visible and the previous object is intact
    assert not store.exists("set/new.bak")
    assert [i.key for i in store.list()] == ["set/obj.bak"]
    assert read_all(store, "set/obj.bak") == b"previous good copy"
    assert store.stat("set/obj.bak").metadata == {"v": "1"}
    directory = backing_dir(store, request)        # and the temporaries were cleaned up, not just hidden
    assert directory is None or sorted(p.name for p in (directory / "set").iterdir()) == ["obj.bak", "obj.bak.drmeta"]


@pytest.mark.parametrize("declared", [10, 3])
@pytest.mark.parametrize("known", [False, True], ids=["size", "size-and-sha256"])
def test_declared_size_mismatch_is_rejected_before_the_object_appears(store: StorageBackend, declared: int,
                                                                      known: bool) -> None:
    # Given a 5-byte stream declared as shorter or longer (with a SHA-256 too: S3 streams one signed request)
    # When put / Then InvalidArgument and no object
    with pytest.raises(InvalidArgument):
        store.put("s/obj", io.BytesIO(b"12345"), size=declared,
                  sha256=hashlib.sha256(b"1234567890"[:declared]).hexdigest() if known else None)
    assert not store.exists("s/obj")
    assert list(store.list()) == []


def test_list_hides_temporaries_and_metadata_sidecars(store: StorageBackend,
                                                      request: pytest.FixtureRequest) -> None:
    # Given an object with metadata, and leftovers of a crashed upload next to it
    store.put("d/x", io.BytesIO(b"1"), metadata={"k": "v"})
    directory = backing_dir(store, request)
    if directory is not None:
        (directory / "d" / "y.partial-0123abcd").write_bytes(b"half")
        (directory / "d" / "y.drmeta.partial-0123abcd").write_bytes(b"{}")
        (directory / "d" / "z.drmeta").write_bytes(b'{"metadata": {}}')
    # When listing / Then only the object shows up
    assert [i.key for i in store.list()] == ["d/x"]
    assert [i.key for i in store.list("d/")] == ["d/x"]


def test_open_streams_in_chunks(store: StorageBackend) -> None:
    # Given a 3 MiB object / When it is read 64 KiB at a time / Then reads are partial and add up
    source = PatternStream(3 * MiB, seed=3)
    store.put("c/obj", source)
    with store.open("c/obj") as stream:
        first = stream.read(64 * 1024)
        assert len(first) == 64 * 1024
        rest = hashlib.sha256(first)
        while chunk := stream.read(64 * 1024):
            rest.update(chunk)
    assert rest.hexdigest() == source.sha256.hexdigest()


@pytest.mark.integration
def test_s3_aborted_multipart_upload_leaves_no_object_and_no_open_upload(request, tmp_path) -> None:
    # Given an S3 store with 5 MiB parts
    store = make_store("s3", request, tmp_path)
    # When the source dies after two parts were uploaded
    with pytest.raises(RuntimeError):
        store.put("big/obj", BrokenStream(fail_after=11 * MiB))
    # Then there is no object and the multipart upload was aborted, not left open
    assert not store.exists("big/obj")
    assert request.getfixturevalue("s3_server").multipart_uploads(store.bucket) == 0  # type: ignore[attr-defined]


def test_put_new_lets_exactly_one_of_several_racing_writers_create_a_key(store: StorageBackend):
    from concurrent.futures import ThreadPoolExecutor

    from workers.storage.base import ExclusiveCreate, ObjectExists
    # Every store kind claims the capability (S3: a conditional PUT, If-None-Match: *)
    assert isinstance(store, ExclusiveCreate)
    # Given a key nobody has written (and a store already connected)
    key = "stamp1/schedule/databases/20261203T020000Z.json"
    assert not store.exists(key)

    def attempt(n: int) -> str:
        try:
            store.put_new(key, f'{{"writer": {n}}}'.encode())
            return f"won {n}"
        except ObjectExists:
            return "lost"
    # When eight writers create it at once
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(8)))
    # Then exactly one wins, the object holds the winner's body, and nothing half-written is left or listed
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1 and outcomes.count("lost") == 7
    with store.open(key) as stream:
        assert stream.read() == f'{{"writer": {winners[0].split()[1]}}}'.encode()
    assert [i.key for i in store.list("stamp1/")] == [key]
    # And a later writer is refused too, the body unchanged
    with pytest.raises(ObjectExists):
        store.put_new(key, b"{}")
    assert store.stat(key).size == len(f'{{"writer": {winners[0].split()[1]}}}')
