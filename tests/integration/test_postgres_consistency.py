"""The drill's PostgreSQL consistency pass against the real local server: amcheck (or a full read of every table)
passes a healthy restored copy and fails one whose table file is damaged on disk, and so does the drill."""
from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Iterator

import pytest

from tests.fixtures import started
from tests.fixtures.postgres import (PG_HOST, PG_PORT, PG_USER, connect, drop_database, fill_sample, pg_settings,
                                     postgres_available, quote, scratch_database, unique_name)
from tests.unit.test_drill import STAMP, make_set
from workers.artifacts.service import ArtifactStore
from workers.artifacts.setmanifest import artifact_key
from workers.config import load_settings
from workers.drill import checks
from workers.drill.checks import Drill
from workers.engines import PostgresEngine
from workers.runtime.errors import PermanentError
from workers.storage.local import LocalStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def source() -> Iterator[str]:
    with started("PostgreSQL", postgres_available()), scratch_database() as name:
        fill_sample(name, rows=300)
        yield name


def damaged_copy(source: str, name: str, table: str = "sites") -> None:
    """``name``: a file-level copy of ``source`` whose ``table`` has a garbage page header in block 0.

    The copy (CREATE DATABASE ... STRATEGY FILE_COPY) has nothing in shared buffers, so the damage written to
    its file on disk is what the server reads next - as after a bad restore or a failing disk."""
    with contextlib.closing(connect(source)) as conn:
        conn.cursor().execute(f"VACUUM (FREEZE) {quote(table)}")       # hint bits set: no page dirtied later
    with contextlib.closing(connect()) as conn:
        cursor = conn.cursor()
        cursor.execute("CHECKPOINT")
        cursor.execute(f"CREATE DATABASE {quote(name)} TEMPLATE {quote(source)} STRATEGY FILE_COPY")
        data_dir = cursor.execute("SELECT current_setting('data_directory')").fetchone()[0]
    with contextlib.closing(connect(name)) as conn:
        relation = conn.cursor().execute("SELECT pg_relation_filepath(?)", table).fetchone()[0]
    with open(os.path.join(data_dir, relation), "r+b") as fh:
        fh.write(b"\xff" * 24)


@pytest.mark.parametrize("amcheck, said", [(True, "amcheck: "), (False, "every table read in full")])
def test_a_healthy_database_passes_and_a_damaged_table_fails(source, amcheck, said) -> None:
    # Given the engine with amcheck (the server has the extension) or with a full read only
    engine = PostgresEngine(pg_settings(pg_amcheck=amcheck))
    # When a healthy copy is checked / Then it passes and says which check ran
    with scratch_database() as healthy:
        fill_sample(healthy, rows=50)
        assert said in engine.check_consistency(healthy)
    # And a copy whose table file is damaged on disk fails, naming the damage and how to fix it
    damaged = unique_name("dr_damaged")
    try:
        damaged_copy(source, damaged)
        with pytest.raises(PermanentError, match="invalid page in block 0") as caught:
            engine.check_consistency(damaged)
        assert "take a new backup" in caught.value.hint
    finally:
        drop_database(damaged)


@dataclasses.dataclass
class DamagingEngine:
    """The real PostgreSQL engine whose restore leaves the scratch copy with a damaged table on disk."""
    real: PostgresEngine

    def __getattr__(self, name: str) -> Any:          # name, server, verify, drop, check_consistency
        return getattr(self.real, name)

    def restore(self, database: str, source_path: str, **kwargs: Any):
        restored_first = f"{database}_r"
        result = self.real.restore(restored_first, source_path, **kwargs)
        try:
            damaged_copy(restored_first, database)
        finally:
            drop_database(restored_first)
        return dataclasses.replace(result, database=database)


def test_the_drill_fails_on_a_damaged_restored_table_and_drops_the_scratch_database(source, tmp_path) -> None:
    # Given a set holding a real pg_dump of the source database
    settings = load_settings(store={"kind": "local", "local_path": str(tmp_path / "store")},
                             staging={"database_dir": str(tmp_path / "staging")},
                             database={"engine": "postgres", "server": PG_HOST, "port": PG_PORT,
                                       "username": PG_USER, "databases": [source]})
    engine = PostgresEngine(settings.database)
    store = ArtifactStore(LocalStore(tmp_path / "store"))
    set_id = make_set(store.backend, 1, complete=True, components=("databases",))
    dump = tmp_path / "taken.dump"
    engine.backup(source, str(dump))
    store.put(artifact_key(STAMP, set_id, "databases", f"{source}.dump"), lambda: dump.open("rb"))
    drill = Drill(settings, store, None, STAMP, set_id, "c0ffee00", tmp_path, engine=DamagingEngine(engine))
    # When the databases are drilled and the restored copy has a damaged table
    [result] = checks.databases(drill)
    # Then the consistency pass fails the drill with the damage named, and the scratch database is gone
    assert result.result == "failed" and "invalid page in block 0" in result.error, result
    assert "amcheck" in result.error and result.cleanup is None
    with contextlib.closing(connect()) as conn:
        left = conn.cursor().execute("SELECT datname FROM pg_database WHERE datname LIKE ?",
                                     "drill_%_c0ffee00%").fetchall()
    assert left == []
    # And the same set drilled with the real engine passes, the pass saying what it proved
    drill.engine, drill.drill_id = engine, "c0ffee01"
    [good] = checks.databases(drill)
    assert good.passed, good.error
    assert "amcheck: " in good.detail and "consistent" in good.detail and "scratch database dropped" in good.detail
