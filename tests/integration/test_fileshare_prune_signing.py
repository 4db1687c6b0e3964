"""Prune on a signed, encrypted file-share repository, on a real local store and a real S3 server (moto): a
manifest forged with only the public certificate — in place of a genuine one, so that it names none of the
packs — never makes prune delete anything: prune stops, naming the manifest, and the store is unchanged
(unsigned, signed by another key, a body swapped under its genuine record, no record at all). Once the genuine
manifest is back, prune works as before and what stays restores."""
from __future__ import annotations

import contextlib
import io

import pytest

from tests.contract.conftest import make_store
from tests.unit.certs import make_cert, signed, write_signing
from tests.unit.forge import forge
from tests.unit.test_fileshare_prune import assert_restores, history, repo_for
from workers.artifacts.records import RECORD_SUFFIX
from workers.artifacts.service import ArtifactStore
from workers.cli import main
from workers.repository.forget import Policy, forget
from workers.repository.prune import Pruner
from workers.repository.repo import Repository
from workers.runtime.errors import PermanentError
from workers.storage.codec import KeyRing, encode, load_certificate
from workers.storage.local import LocalStore
from workers.storage.signing import Trust, attach, trust_of

STAMP = "stamp1"


def build(backend, tmp_path) -> tuple[ArtifactStore, KeyRing, dict, object]:
    """A signed, encrypted repository with snapshots s1..s3 of a changing tree, s1 and s2 forgotten (their
    packs are prunable); returns the store, the private key ring, the trees each snapshot saw, the key path."""
    signed(backend, tmp_path)
    cert, key = make_cert("prune-signing").write(tmp_path)
    store = ArtifactStore(backend, certificate=load_certificate(cert))
    copies = history(tmp_path, store, count=3)
    forget(repo_for(store, tmp_path), Policy(keep_last=1))
    return store, KeyRing.from_files(keys=[key]), copies, key


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def world(request, tmp_path):
    backend = make_store(request.param, request, tmp_path)
    yield build(backend, tmp_path)
    with contextlib.suppress(Exception):
        for info in list(backend.list("")):
            backend.delete(info.key)


def listing(store: ArtifactStore) -> dict[str, int]:
    return {info.key: info.size for info in store.backend.list(f"{STAMP}/")}


@contextlib.contextmanager
def attacker(store: ArtifactStore, trust: Trust):
    """Write to the store as someone with write access and the public certificate, but not the signing key."""
    genuine = trust_of(store.backend)
    attach(store.backend, trust)
    try:
        yield store
    finally:
        attach(store.backend, genuine)


def raw(store: ArtifactStore, key: str) -> bytes:
    with store.backend.open(key) as stream:
        return stream.read()


def put_raw(store: ArtifactStore, key: str, body: bytes) -> None:
    store.backend.put(key, io.BytesIO(body), size=len(body))


def forged_body(store: ArtifactStore, snapshot: str) -> bytes:
    """A manifest naming no file, encrypted with the public certificate, in the artifact format."""
    plain = (b'{"format": 2, "snapshot_id": "%s", "stamp": "%s", "backup_set_id": "%s", "source": "forged", '
             b'"created_at": "2026-12-02T00:00:00Z", "entries": []}') % (snapshot.encode(), STAMP.encode(),
                                                                          snapshot.encode())
    return encode(io.BytesIO(plain), compress=True, recipient=store.certificate).read()


def test_a_forged_manifest_never_makes_prune_delete_and_a_genuine_repository_prunes(world, tmp_path):
    store, keys, copies, _ = world
    repo = Repository(store, STAMP)
    manifest_key = repo.manifest_key("s3")
    genuine = {k: raw(store, k) for k in (manifest_key, manifest_key + RECORD_SUFFIX)}
    other_key = write_signing(tmp_path, "attacker")[0]

    def unsigned():
        with attacker(store, Trust()):
            forge(store, "s3", {}, replace=True)

    def signed_by_another_key():
        with attacker(store, Trust.from_files(other_key)):
            forge(store, "s3", {}, replace=True)

    def body_under_the_genuine_record():
        put_raw(store, manifest_key, forged_body(store, "s3"))

    def no_record():
        put_raw(store, repo.manifest_key("s9"), forged_body(store, "s9"))

    attacks = {unsigned: "is not signed", signed_by_another_key: "signed by unknown key",
               body_under_the_genuine_record: "the catalogue expects", no_record: "has no artifact record"}
    for attack, why in attacks.items():
        # Given the newest (only remaining) snapshot's manifest replaced by, or joined by, a forged one naming
        # no file: trusted, every pack would be free to delete
        attack()
        before = listing(store)
        # When the repository is pruned with the private key
        with pytest.raises(PermanentError) as refused:
            Pruner(Repository(store, STAMP), keys).run()
        # Then prune stops, naming the manifest and why, with a hint; nothing in the store changed
        message = refused.value.message
        assert "nothing was pruned" in message and why in message, (attack.__name__, message)
        assert repo.manifest_key("s9" if attack is no_record else "s3") in message, attack.__name__
        assert refused.value.hint and listing(store) == before, attack.__name__
        # (the operator puts the genuine manifest back before the next attack)
        for key, body in genuine.items():
            put_raw(store, key, body)
        store.backend.delete(repo.manifest_key("s9"))
    # When the genuine repository is pruned
    report = Pruner(Repository(store, STAMP), keys).run()
    # Then it prunes as before: what only the forgotten snapshots needed is freed, the kept one restores
    assert report.snapshots == 1 and report.bytes_freed > 0 and report.packs_deleted
    assert_restores(store, tmp_path, copies, ["s3"], "after-prune", keys)


def test_the_cli_refuses_to_prune_past_a_forged_manifest_with_exit_2(tmp_path, monkeypatch, capsys):
    store, _, _, key = build(LocalStore(tmp_path / "store"), tmp_path)
    # Given the operator's configuration: the local store and the workers' verify key
    monkeypatch.setenv("APPSVC_DR_STORE__KIND", "local")
    monkeypatch.setenv("APPSVC_DR_STORE__LOCAL_PATH", str(tmp_path / "store"))
    monkeypatch.setenv("APPSVC_DR_ENCRYPTION__VERIFY_KEYS", str(write_signing(tmp_path)[1]))
    monkeypatch.setenv("APPSVC_DR_FILESHARE__CACHE_DIR", str(tmp_path / "cli-cache"))
    # And the kept snapshot's manifest replaced by an unsigned forgery
    with attacker(store, Trust()):
        forge(store, "s3", {}, replace=True)
    before = listing(store)
    # When the operator prunes / Then it exits 2 saying which manifest and how to fix it; nothing is deleted
    assert main(["snapshots", "prune", "--stamp", STAMP, "--key", str(key)]) == 2
    err = capsys.readouterr().err
    assert f"{STAMP}/fileshare/snapshots/s3.json" in err and "is not signed" in err and "how to fix:" in err
    assert listing(store) == before
