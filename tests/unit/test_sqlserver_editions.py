"""Editions, versions and a least-privilege login, against the simulated instance: COMPRESSION only where the
edition supports it, MAXTRANSFERSIZE for TDE databases on 2016/2017, and RESTORE VERIFYONLY only with the
CREATE DATABASE permission it needs."""
from __future__ import annotations

import logging

import pytest

from tests.sqlsim import Login
from tests.unit.sqlserver_sim import DB, SECRET, STAGE, header_of, make
from workers.runtime.errors import PermanentError


@pytest.mark.parametrize("edition", ["Express Edition (64-bit)", "Web Edition (64-bit)"])
def test_express_and_web_back_up_without_compression_and_say_so_at_info(tmp_path, edition, caplog) -> None:
    # Given an edition without backup compression (BACKUP ... WITH COMPRESSION would fail with 1844)
    engine, sim = make(tmp_path)
    sim.server.edition = edition
    # When it backs up with the default settings (compression on)
    with caplog.at_level(logging.INFO, logger="workers.engines.sqlserver"):
        result = engine.backup(DB, STAGE)
    # Then the backup succeeds uncompressed, and the log says why at INFO - not as a warning or an error
    assert not result.skipped and not header_of(sim, STAGE).compressed
    [statement] = sim.statements("BACKUP")
    assert "NO_COMPRESSION" in statement
    notes = [r for r in caplog.records if "cannot compress" in r.getMessage()]
    assert notes and all(r.levelno == logging.INFO for r in notes)


def test_standard_edition_compresses(tmp_path) -> None:
    engine, sim = make(tmp_path)
    sim.server.edition = "Standard Edition (64-bit)"
    engine.backup(DB, STAGE)
    assert header_of(sim, STAGE).compressed


@pytest.mark.parametrize("version, encrypted, configured, expected", [
    ("13.0.6300.2", True, None, 131072),        # 2016 + TDE: raised so the pages are really compressed
    ("14.0.3456.2", True, 65536, 131072),       # 2017 + TDE: 64 KB is not enough
    ("14.0.3456.2", True, 1048576, 1048576),    # a larger configured value stays
    ("13.0.6300.2", False, None, None),         # no TDE: nothing to do
    ("15.0.4153.1", True, None, None),          # 2019 CU5+ raises it itself
])
def test_tde_databases_on_2016_and_2017_get_maxtransfersize(tmp_path, version, encrypted, configured,
                                                           expected) -> None:
    # Given a database with TDE on a SQL Server version
    engine, sim = make(tmp_path, max_transfer_size=configured)
    sim.server.version = version
    sim.server.databases[DB].encrypted = encrypted
    # When it is backed up compressed
    engine.backup(DB, STAGE)
    # Then MAXTRANSFERSIZE is what the version needs, and the backup really shrank (msdb's sizes)
    [statement] = sim.statements("BACKUP")
    assert (f"MAXTRANSFERSIZE = {expected}" in statement) if expected else "MAXTRANSFERSIZE" not in statement
    history = sim.server.history[-1]
    assert history.compressed_backup_size < history.backup_size


def least_privilege(sim, *roles: str) -> None:
    """A login that is only db_backupoperator in the database (plus ``roles`` on the server)."""
    sim.server.logins["backup"] = Login("backup", SECRET, database_roles={DB: {"db_backupoperator"}},
                                        server_roles=set(roles))


def test_a_db_backupoperator_login_backs_up_and_relies_on_the_backup_checksum_with_a_warning(tmp_path,
                                                                                           caplog) -> None:
    # Given a least-privilege login: BACKUP DATABASE yes, CREATE DATABASE (needed by RESTORE VERIFYONLY) no
    engine, sim = make(tmp_path)
    least_privilege(sim)
    # When it backs up
    with caplog.at_level(logging.WARNING, logger="workers.engines.sqlserver"):
        result = engine.backup(DB, STAGE)
    # Then the backup is taken WITH CHECKSUM and succeeds; VERIFYONLY is not attempted (it would fail with 262)
    assert not result.skipped and header_of(sim, STAGE).has_checksums
    assert sim.statements("RESTORE") == []
    # And a warning names what was skipped and the GRANT that enables it
    assert any("RESTORE VERIFYONLY skipped" in r.getMessage() and "GRANT CREATE ANY DATABASE TO [backup];"
               in r.getMessage() for r in caplog.records)


def test_verify_fallback_fail_fails_the_backup_with_the_grant(tmp_path) -> None:
    engine, sim = make(tmp_path, verify_fallback="fail")
    least_privilege(sim)
    with pytest.raises(PermanentError, match="not verified") as caught:
        engine.backup(DB, STAGE)
    assert "GRANT CREATE ANY DATABASE TO [backup];" in caught.value.hint
    assert sim.server.host_path(STAGE).exists()


def test_dbcreator_lets_the_least_privilege_login_verify(tmp_path) -> None:
    engine, sim = make(tmp_path)
    least_privilege(sim, "dbcreator")
    engine.backup(DB, STAGE)
    assert [s.split(" FROM")[0] for s in sim.statements("RESTORE")] == ["RESTORE VERIFYONLY"]
