"""`recover run` with a database override on the real PostgreSQL path: a set whose artifact for one database holds
another database's dump (pg_dump of the real server) is refused before anything changes, naming
--allow-database-mismatch; resumed with it, pg_restore brings the rows back, and the state file keeps the flag.
(--force-disconnect, --tail-log-backup and --allow-no-checksum are SQL Server's: tests/unit/test_recover_database_flags.py
runs them against the simulated instance.)"""
from __future__ import annotations

import json

import pytest

from tests.fixtures import started
from tests.fixtures.postgres import (drop_database, fill_sample, postgres_available, scratch_database,
                                     table_fingerprints, unique_name)
from tests.fixtures.rabbit import run_cli
from tests.integration.test_recover import exists
from tests.unit.certs import make_cert
from tests.unit.forge import STAMP, database_set

pytestmark = pytest.mark.integration
SET = "20261201T020000Z-0000beef"


def test_a_dump_of_another_database_needs_allow_database_mismatch_end_to_end(tmp_path):
    make_cert("recover-flags").write(tmp_path)
    with started("PostgreSQL", postgres_available()), scratch_database() as source:
        fill_sample(source, rows=200)
        wanted = unique_name("dr_recover")               # the set's name for it; not on the server
        # Given a signed set whose artifact for `wanted` is a real pg_dump of `source`
        settings, _, _ = database_set(tmp_path, SET, source, wanted)
        args = ("--set", SET, "--skip", "fileshare,secrets")
        try:
            # When it is recovered: the step fails before anything on the server changes, naming the override
            out = run_recover(settings, tmp_path, "run", *args)
            assert out.returncode == 1, out.stdout + out.stderr
            assert f"the archive holds database '{source}', not '{wanted}' as the backup set says" in out.stdout
            assert "Pass --allow-database-mismatch" in out.stdout and not exists(wanted)
            (state,) = (tmp_path / "store" / STAMP / "recoveries").glob("*.json")
            recovery_id = state.stem
            # When it is resumed with --allow-database-mismatch
            out = run_recover(settings, tmp_path, "run", *args, "--resume", recovery_id, "--allow-database-mismatch")
            assert out.returncode == 0, out.stdout + out.stderr
            assert "database restore overrides: --allow-database-mismatch (kept for --resume)" in out.stdout
            # Then the rows are back under the set's name, row for row, and the state file keeps the flag
            assert table_fingerprints(wanted) == table_fingerprints(source)
            data = json.loads(state.read_text())
            assert data["targets"]["database_flags"]["allow_database_mismatch"] is True
            step = {s["step_id"]: s for s in data["steps"]}[f"database:{wanted}"]
            assert step["status"] == "done" and step["runs"] == 2
        finally:
            drop_database(wanted)


def run_recover(settings, root, *args: str):
    return run_cli(settings, "recover", *args, "--key", str(root / "key.pem"), "--out-dir", str(root / "out"),
                   timeout=300)
