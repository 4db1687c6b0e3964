"""The README's main job: `appsvc-dr demo` on the embedded default, ending with a restore drill of its set; with
Azurite installed, the Function Apps storage component is in the set, drilled and restored into a new account;
without it, the demo says it skipped the component and why."""
from __future__ import annotations

import contextlib

import pyodbc
import pytest

from tests.fixtures import require_service
from tests.fixtures.azurite import BINARY
from tests.fixtures.rabbit import run_cli, settings_for

pytestmark = pytest.mark.integration


def drill_databases() -> list[str]:
    with contextlib.closing(pyodbc.connect("DRIVER={PostgreSQL Unicode};SERVER=127.0.0.1;PORT=5432;UID=postgres;"
                                           "DATABASE=postgres", autocommit=True, timeout=5)) as conn:
        return [r[0] for r in conn.cursor().execute("SELECT datname FROM pg_database WHERE datname LIKE 'drill_%'")]


def azurite_binary() -> str:
    import os
    binary = os.environ.get("AZURITE_BINARY", str(BINARY))
    if not os.path.exists(binary):
        require_service("Azurite", f"{binary} is missing: run `bash deploy/setup.sh`")
    return binary


def run_demo(rabbit_vhost, tmp_path, *extra: str):
    before = drill_databases()
    done = run_cli(settings_for(rabbit_vhost), "demo", "--dir", str(tmp_path / "demo"), "--timeout", "120", *extra,
                   timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for seen in ("secrets-stored", "database-backed-up", "fileshare-synced", "backup-set-completed",
                 "restore drill"):
        assert seen in out, seen
    table = out[out.index("restore drill"):]
    # the made-up secrets and account keys never appear, and the drill left no scratch database behind
    assert "demo-only" not in out + done.stderr and "ZGVtby1vbmx5" not in out + done.stderr
    assert drill_databases() == before
    return out, table


def passed(table: str, component: str) -> bool:
    return any(line.lstrip().startswith(component) and "passed" in line for line in table.splitlines())


def test_the_demo_backs_up_every_component_and_proves_the_set_restores(rabbit_vhost, tmp_path):
    # When the demo runs against a fresh vhost and an empty directory, with Azurite
    out, table = run_demo(rabbit_vhost, tmp_path, "--azurite", azurite_binary())
    # Then every worker did its part, the set completed, and the drill restored all of it into scratch space
    for component in ("secrets", "databases", "fileshare", "functions"):
        assert passed(table, component), table
    assert "failed" not in table
    # and the Function Apps storage copy went into a new account with its counts verified
    assert "functions-backed-up" in out and "demofuncs: 3 blobs (3 read), 1 messages, 1 entities" in out
    assert "restored demofuncs into the new account demorestored: 1 container(s), 3 blob(s), 1 message(s), " \
           "1 entit(ies); counts verified" in out


def test_without_azurite_the_demo_says_it_skipped_the_component(rabbit_vhost, tmp_path):
    # When Azurite is not there
    out, table = run_demo(rabbit_vhost, tmp_path, "--azurite", str(tmp_path / "no-azurite-here"))
    # Then the demo says it skipped the component and why, and everything else still completes and drills
    assert "functions (Function Apps storage): SKIPPED" in out and "no-azurite-here" in out
    for component in ("secrets", "databases", "fileshare"):
        assert passed(table, component), table
    assert not passed(table, "functions") and "functions-backed-up" not in out
