"""PostgresEngine.restore_preflight against the real server: what `recover plan` reports about target databases
(missing, empty, holding tables) and a login that may not create or replace them, each with its fix."""
from __future__ import annotations

import contextlib
import uuid

import pytest

from tests.fixtures import started
from tests.fixtures.postgres import connect, fill_sample, pg_settings, postgres_available, quote, scratch_database
from workers.engines.postgres import PostgresEngine

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def login_without_createdb():
    name = f"dr_nocreate_{uuid.uuid4().hex[:8]}"
    with contextlib.closing(connect()) as conn:
        conn.cursor().execute(f"CREATE ROLE {quote(name)} LOGIN NOCREATEDB NOSUPERUSER")
    try:
        yield name
    finally:
        with contextlib.closing(connect()) as conn:
            conn.cursor().execute(f"DROP ROLE IF EXISTS {quote(name)}")


def test_states_of_missing_empty_and_filled_targets_and_a_login_that_may_not_restore():
    with started("PostgreSQL", postgres_available()), scratch_database() as empty, scratch_database() as filled:
        fill_sample(filled, rows=10)
        missing = f"dr_missing_{uuid.uuid4().hex[:8]}"
        # Given the superuser login: every target is restorable; only the filled one is not empty
        states = {s.database: s for s in PostgresEngine(pg_settings()).restore_preflight([missing, empty, filled])}
        assert not states[missing].exists and states[missing].empty and not states[missing].problems
        assert states[empty].exists and states[empty].tables == 0 and states[empty].empty
        assert states[filled].tables == 3 and not states[filled].empty and not states[filled].problems
        # When a login without CREATEDB that owns nothing checks the same targets
        with login_without_createdb() as user:
            weak = {s.database: s for s in PostgresEngine(pg_settings(username=user)).restore_preflight(
                [missing, filled])}
        # Then it may neither create the missing one nor replace the other, each with the statement that fixes it
        assert [p.fix for p in weak[missing].problems] == [f'ALTER ROLE "{user}" CREATEDB; (or restore as a login '
                                                           "that may)"]
        assert "does not own database" in weak[filled].problems[0].what
        assert weak[filled].problems[0].fix.startswith(f'ALTER DATABASE "{filled}" OWNER TO "{user}"')
