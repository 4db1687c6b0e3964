"""The README's main job: `appsvc-dr demo` on the embedded default, ending with a restore drill of its set."""
from __future__ import annotations

import contextlib

import pyodbc
import pytest

from tests.fixtures.rabbit import run_cli, settings_for

pytestmark = pytest.mark.integration


def drill_databases() -> list[str]:
    with contextlib.closing(pyodbc.connect("DRIVER={PostgreSQL Unicode};SERVER=127.0.0.1;PORT=5432;UID=postgres;"
                                           "DATABASE=postgres", autocommit=True, timeout=5)) as conn:
        return [r[0] for r in conn.cursor().execute("SELECT datname FROM pg_database WHERE datname LIKE 'drill_%'")]


def test_the_demo_backs_up_every_component_and_proves_the_set_restores(rabbit_vhost, tmp_path):
    before = drill_databases()
    # When the demo runs against a fresh vhost and an empty directory
    done = run_cli(settings_for(rabbit_vhost), "demo", "--dir", str(tmp_path / "demo"), "--timeout", "120",
                   timeout=400)
    # Then every worker did its part, the set completed, and the drill restored all of it into scratch space
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for seen in ("secrets-stored", "database-backed-up", "fileshare-synced", "backup-set-completed",
                 "restore drill"):
        assert seen in out, seen
    table = out[out.index("restore drill"):]
    for component in ("secrets", "databases", "fileshare"):
        assert any(line.lstrip().startswith(component) and "passed" in line for line in table.splitlines()), table
    assert "failed" not in table
    # the made-up secrets never appear, and the drill left no scratch database behind
    assert "demo-only" not in out + done.stderr
    assert drill_databases() == before
