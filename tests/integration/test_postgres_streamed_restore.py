"""A new PostgreSQL database restored while its artifact downloads (workers/engines/postgres_stream.py), on the real
server with real pg_restore: the rows come back row for row, nothing but the verified result is ever visible
under the target's name (a verdict that fails at the very end leaves no target), a killed run's scratch database
is dropped by the next one, damaged archives fail clearly, an existing target is replaced in place from a
verified staged copy, and an archive pg_restore cannot read from a pipe falls back to the staged copy."""
from __future__ import annotations

import contextlib
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures import started
from tests.fixtures.postgres import (connect, drop_database, fill_sample, postgres_available, quote, scratch_database,
                                     table_fingerprints, unique_name)
from tests.integration.test_recover import exists
from tests.unit.certs import make_cert
from tests.unit.forge import STAMP, database_set
from workers.artifacts.service import ArtifactStore
from workers.config import Settings
from workers.dbbackup.restore import restore_from_set
from workers.engines.base import RestoreOptions
from workers.engines.postgres import PostgresEngine
from workers.artifacts import head
from workers.engines.postgres_stream import SCRATCH_PREFIX, scratch_for
from workers.runtime.errors import PermanentError
from workers.storage.codec import KeyRing
from workers.storage.crypto import IntegrityError

pytestmark = pytest.mark.integration
SET = "20261203T020000Z-0000cafe"
MISMATCH = RestoreOptions(allow_database_mismatch=True)        # an artifact named after another database


@dataclass
class World:
    settings: Settings
    store: ArtifactStore
    keys: KeyRing
    source: str
    dump: Path
    root: Path

    def restore(self, target: str, database: str | None = None, options: RestoreOptions | None = None,
                **settings) -> tuple[list[str], object]:
        said: list[str] = []
        configured = self.settings.database.model_copy(update=settings)
        result = restore_from_set(self.settings.staging, configured, PostgresEngine(configured), self.store,
                                  self.keys, stamp=STAMP, set_id=SET, database=database or self.source,
                                  target=target, say=said.append, options=options)
        return said, result

    def artifact(self, name: str | None = None) -> str:
        return f"{STAMP}/{SET}/databases/{name or self.source}.dump"


@pytest.fixture
def world(tmp_path):
    make_cert("streamed-restore").write(tmp_path)
    with started("PostgreSQL", postgres_available()), scratch_database() as source:
        fill_sample(source, rows=20000)
        settings, store, dump = database_set(tmp_path, SET, source, source)
        yield World(settings, store, KeyRing.from_files(keys=[tmp_path / "key.pem"]), source, dump, tmp_path)


def scratch_databases() -> list[str]:
    with contextlib.closing(connect()) as conn:
        return [r[0] for r in conn.cursor().execute("SELECT datname FROM pg_database WHERE datname LIKE ?",
                                                      SCRATCH_PREFIX + "%").fetchall()]


def staged_files(world: World) -> list[Path]:
    return [p for p in (world.root / "staging").rglob("*") if p.is_file()]


def test_a_new_database_is_restored_while_it_downloads_row_for_row(world):
    target = unique_name("dr_streamed")
    try:
        said, result = world.restore(target)
        assert any("while it downloaded" in line for line in said), said
        assert table_fingerprints(target) == table_fingerprints(world.source)
        source = table_fingerprints(world.source)
        assert (result.tables, result.rows) == (len(source), sum(rows for rows, _ in source.values()))
        assert scratch_databases() == [] and staged_files(world) == []     # no plaintext copy on disk
    finally:
        drop_database(target)


def test_a_verdict_that_fails_after_the_last_byte_leaves_no_target(world):
    """The source's contract: a hash mismatch may surface only on leaving its block, after pg_restore has read
    everything. The scratch database holds the whole restore at that moment; it must never become the target."""
    engine, target, read = PostgresEngine(world.settings.database), unique_name("dr_unverified"), []

    @contextlib.contextmanager
    def source_failing_at_the_end():
        with open(world.dump, "rb") as stream:
            yield stream
            read.append(stream.tell())
        raise PermanentError("stored bytes do not match the record")

    with pytest.raises(PermanentError, match="do not match the record"):
        engine.restore_streamed(target, source_failing_at_the_end, total=world.dump.stat().st_size,
                                verified_head=head.HEAD_BYTES)
    assert read == [world.dump.stat().st_size]                 # everything was fed to pg_restore
    assert not exists(target) and scratch_databases() == []


def test_a_tampered_artifact_is_refused_and_nothing_is_left_on_the_server(world):
    path = world.root / "store" / world.artifact()
    with open(path, "r+b") as fh:                              # flip a byte near the end of the stored object
        fh.seek(-40, 2)
        byte = fh.read(1)
        fh.seek(-40, 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    target = unique_name("dr_tampered")
    with pytest.raises(IntegrityError, match="final segment failed authentication"):
        world.restore(target)                                  # after pg_restore read all but the last segment
    assert not exists(target) and scratch_databases() == []


def test_a_killed_runs_scratch_database_is_dropped_by_the_next_restore(world):
    target = unique_name("dr_leftover")
    leftover = scratch_for(target)
    with contextlib.closing(connect()) as conn:
        conn.cursor().execute(f"CREATE DATABASE {quote(leftover)}")
    with contextlib.closing(connect(leftover)) as conn:
        conn.cursor().execute("CREATE TABLE half_restored (id int)")
    try:
        said, _ = world.restore(target)
        assert any("while it downloaded" in line for line in said)
        assert table_fingerprints(target) == table_fingerprints(world.source)
        assert "public.half_restored" not in table_fingerprints(target) and scratch_databases() == []
    finally:
        drop_database(target)
        drop_database(leftover)


def test_a_damaged_archive_fails_clearly_and_leaves_nothing(world):
    garbage = world.root / "garbage.dump"
    garbage.write_bytes(b"PGDMP" + bytes(range(256)) * 64)     # a header's magic, then nonsense
    name = unique_name("dr_garbage")
    world.store.put(world.artifact(name), lambda: open(garbage, "rb"), hash_head=True)
    with pytest.raises(PermanentError) as failed:
        world.restore(name, database=name)
    assert "pg_restore" in failed.value.message or "pg_dump archive" in failed.value.message
    assert failed.value.hint
    assert not exists(name) and scratch_databases() == []


def test_an_existing_target_is_replaced_in_place_from_a_verified_staged_copy(world):
    with scratch_database() as target:
        with contextlib.closing(connect(target)) as conn:
            conn.cursor().execute("COMMENT ON DATABASE " + quote(target) + " IS 'kept by the in-place restore'")
        said, _ = world.restore(target)
        assert not any("while it downloaded" in line for line in said)
        assert any(line.startswith("fetched and verified") for line in said), said
        assert table_fingerprints(target) == table_fingerprints(world.source)
        with contextlib.closing(connect(target)) as conn:
            comment = conn.cursor().execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                                            "WHERE datname = ?", target).fetchone()[0]
        assert comment == "kept by the in-place restore"         # the database itself was not replaced


def test_restore_while_fetching_off_stages_first(world):
    target = unique_name("dr_staged")
    try:
        said, _ = world.restore(target, restore_while_fetching=False)
        assert any(line.startswith("fetched and verified") for line in said)
        assert table_fingerprints(target) == table_fingerprints(world.source)
    finally:
        drop_database(target)


def test_an_archive_pg_restore_cannot_read_from_a_pipe_is_restored_from_a_staged_copy(world, tmp_path):
    """pg_restore refuses an archive whose data it must seek to ("out-of-order restore request"); real pg_dump
    archives of plain tables never need it, so a wrapper answers as pg_restore does for one, on a pipe only."""
    wrapper = tmp_path / "pg_restore"
    wrapper.write_text("#!/bin/sh\n"
                       'case " $* " in *" --list "*) exec pg_restore "$@";; esac\n'
                       'if [ -p /dev/stdin ]; then cat > /dev/null; echo "pg_restore: error: could not find block '
                       'ID 3347 in archive -- possibly due to out-of-order restore request, which cannot be handled '
                       'due to non-seekable input file" >&2; exit 1; fi\n'
                       'exec pg_restore "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    target = unique_name("dr_seek")
    try:
        said, _ = world.restore(target, pg_restore=str(wrapper))
        assert any("cannot restore this archive from a stream" in line for line in said), said
        assert any(line.startswith("fetched and verified") for line in said)
        assert table_fingerprints(target) == table_fingerprints(world.source) and scratch_databases() == []
    finally:
        drop_database(target)


def test_a_table_of_contents_beyond_the_verified_head_is_restored_from_a_staged_copy(world, monkeypatch):
    """Only the archive's first bytes, proven by the signed record's head hash, reach pg_restore --list, and
    pg_restore starts only once they hold the whole table of contents: stored with a 64 KiB head this archive
    streams; with a 2,000-byte head its table of contents does not fit, and it is restored from a staged copy."""
    assert world.dump.stat().st_size > 1 << 20
    for size, streamed in ((64 << 10, True), (2000, False)):
        monkeypatch.setattr(head, "HEAD_BYTES", size)
        name = unique_name("dr_head")
        world.store.put(world.artifact(name), lambda: open(world.dump, "rb"), hash_head=True)
        assert world.store.record(world.artifact(name)).metadata["head_size"] == size
        try:
            said, _ = world.restore(name, database=name, options=MISMATCH)
            assert any("while it downloaded" in line for line in said) is streamed, said
            if not streamed:
                assert any("table of contents is not inside its first 2,000 verified bytes" in line
                           for line in said), said
            assert table_fingerprints(name) == table_fingerprints(world.source) and scratch_databases() == []
        finally:
            drop_database(name)


def test_an_artifact_stored_without_a_head_hash_is_restored_from_a_staged_copy(world):
    name = unique_name("dr_nohead")
    world.store.put(world.artifact(name), lambda: open(world.dump, "rb"))       # as stored before heads
    try:
        said, _ = world.restore(name, database=name, options=MISMATCH)
        assert not any("while it downloaded" in line for line in said)
        assert table_fingerprints(name) == table_fingerprints(world.source)
    finally:
        drop_database(name)


def test_a_replaced_artifact_runs_none_of_its_sql(world, tmp_path, monkeypatch):
    """Someone who can write to the store replaces the artifact with another archive, encrypted to the public
    certificate (AES-GCM authenticates it: they chose its key). The signed record still describes the original:
    its first 64 KiB fail the head hash before pg_restore is started at all, so none of the archive's SQL runs."""
    monkeypatch.setattr(head, "HEAD_BYTES", 64 << 10)
    name = unique_name("dr_replaced")
    world.store.put(world.artifact(name), lambda: open(world.dump, "rb"), hash_head=True)
    with scratch_database() as other:
        fill_sample(other, rows=5000)
        with contextlib.closing(connect(other)) as conn:
            conn.cursor().execute("CREATE TABLE planted (id int)")
        forged = tmp_path / "forged.dump"
        PostgresEngine(world.settings.database).backup(other, str(forged))
    assert forged.stat().st_size > 64 << 10
    world.store.put(f"{STAMP}/forged/databases/x.dump", lambda: open(forged, "rb"), hash_head=True)
    store_root = world.root / "store"
    (store_root / world.artifact(name)).write_bytes((store_root / STAMP / "forged/databases/x.dump").read_bytes())
    calls = tmp_path / "calls"
    wrapper = tmp_path / "pg_restore"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec pg_restore "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(IntegrityError, match="do not match the signed record's head hash"):
        world.restore(name, database=name, options=MISMATCH, pg_restore=str(wrapper))
    assert not calls.exists()                                  # neither pg_restore nor its lister ran
    assert not exists(name) and scratch_databases() == []


@pytest.mark.parametrize("existing", [False, True], ids=["streamed", "staged"])
def test_a_replaced_artifact_whose_head_matches_fails_at_its_end_by_the_plaintext_hash(world, tmp_path, monkeypatch,
                                                                                      existing):
    """The stored bytes of a database dump are not hashed on their own (one hash pass: the plaintext's SHA-256 in the
    signed record proves the whole): an artifact replaced by one that keeps the signed head (the same dump with
    bytes appended, encrypted to the public certificate) passes AES-GCM and the head check, and is refused when
    its end is read; no target (or the old one, unchanged) and no scratch database are left."""
    monkeypatch.setattr(head, "HEAD_BYTES", 64 << 10)
    name = unique_name("dr_tail")
    world.store.put(world.artifact(name), lambda: open(world.dump, "rb"), hash_head=True)
    forged = tmp_path / "forged.dump"
    forged.write_bytes(world.dump.read_bytes() + b"\0" * 4096)
    assert world.dump.stat().st_size > 64 << 10
    world.store.put(f"{STAMP}/forged/databases/x.dump", lambda: open(forged, "rb"), hash_head=True)
    store_root = world.root / "store"
    (store_root / world.artifact(name)).write_bytes((store_root / STAMP / "forged/databases/x.dump").read_bytes())
    target = unique_name("dr_tail_target")
    if existing:
        with contextlib.closing(connect()) as conn:
            conn.autocommit = True
            conn.cursor().execute(f"CREATE DATABASE {quote(target)}")
    try:
        with pytest.raises(IntegrityError, match="catalogue expects"):
            world.restore(target, database=name, options=MISMATCH)
        assert exists(target) == existing and scratch_databases() == [] and staged_files(world) == []
    finally:
        drop_database(target)
