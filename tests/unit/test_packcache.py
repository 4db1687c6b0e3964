"""The restore's pack cache: a decoded pack is held in memory within its budget, else spilled to a private file
(0600) that is removed once no file needs it; every blob is checked against its id either way."""
from __future__ import annotations

import hashlib
import os
import stat
from collections import Counter

import pytest

from tests.unit.certs import make_cert
from tests.unit.forge import configured_store, forge
from workers.repository.packcache import PackCache
from workers.storage.codec import KeyRing
from workers.storage.crypto import IntegrityError

FILES = {f"f{i}.bin": os.urandom(4096 + i) for i in range(5)}


@pytest.fixture
def repo(tmp_path, monkeypatch):
    cert = make_cert("packcache")
    (tmp_path / "cert.pem").write_bytes(cert.cert_pem)
    (tmp_path / "key.pem").write_bytes(cert.key_pem())
    monkeypatch.setenv("APPSVC_DR_STORE__LOCAL_PATH", str(tmp_path / "store"))
    monkeypatch.setenv("APPSVC_DR_ENCRYPTION__CERTIFICATE", str(tmp_path / "cert.pem"))
    repo = forge(configured_store(), "s", FILES, lies={"f3.bin": b"x" * len(FILES["f3.bin"])})
    repo.load_index()
    return repo, KeyRing.from_files(keys=[tmp_path / "key.pem"])


@pytest.mark.parametrize("memory", [0, 64 << 20], ids=["spilled to disk", "in memory"])
def test_blobs_come_back_checked_and_the_pack_goes_when_no_file_needs_it(repo, tmp_path, memory):
    # Given a pack of five blobs, one of them damaged (other bytes under its honest id)
    repo, keys = repo
    blobs = [hashlib.sha256(data).hexdigest() for data in FILES.values()]
    (pack,) = {repo.index.place(b).pack for b in blobs}
    cache = PackCache(repo, keys, Counter({pack: len(blobs)}), temp_root=tmp_path / "tmp", memory=memory)
    try:
        cache.prefetch([pack])
        # When the blobs are read: the honest ones come back byte for byte; the damaged one is refused
        for name, blob in zip(FILES, blobs, strict=True):
            if name == "f3.bin":
                with pytest.raises(IntegrityError, match="does not match its id"):
                    cache.blob(blob)
                cache.release([blob])          # as the restore does with the blobs of a file it gives up
                continue
            assert bytes(cache.blob(blob)) == FILES[name]
            # Then while files still need it the pack is on disk only when the memory budget was 0, and private
            spilled = cache.dir / pack
            if name != "f4.bin":
                assert spilled.exists() == (memory == 0)
                if memory == 0:
                    assert stat.S_IMODE(spilled.stat().st_mode) == 0o600
        # And once the last blob is read, nothing of it is left, on disk or in memory
        assert not (cache.dir / pack).exists() and not cache._held and cache._memory == memory
        assert cache.spilled == (1 if memory == 0 else 0)          # what the restore's log line reports
    finally:
        cache.close()
    assert not cache.dir.exists()


def test_the_prefetch_order_follows_the_files_in_flight_not_only_the_first():
    # Given two files written at once, each of two packs (a1 a2, b1 b2), and a third file after them (c1)
    from types import SimpleNamespace

    from workers.fileshare.restorepacks import need_order
    from workers.repository.index import BlobPlace

    places = {blob: BlobPlace(blob[0] + "pack" + blob[1], 0, 100) for blob in ("a1", "a2", "b1", "b2", "c1")}
    steps = [SimpleNamespace(entry=SimpleNamespace(blobs=blobs)) for blobs in (("a1", "a2"), ("b1", "b2"), ("c1",))]
    # When the packs are ordered for two writers, then for one
    # Then with two, both files' first packs come before either's second, and the third file's after them
    assert need_order(steps, places.__getitem__, 2) == ["apack1", "bpack1", "apack2", "bpack2", "cpack1"]
    assert need_order(steps, places.__getitem__, 1) == ["apack1", "apack2", "bpack1", "bpack2", "cpack1"]
