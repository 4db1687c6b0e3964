"""SQL Server engine restores, BACKUP TO URL (S3) and stand-alone verify/check, against the simulated instance."""
from __future__ import annotations

import pytest

from tests.sqlsim import DbFile, Login
from tests.unit.sqlserver_sim import DB, STAGE, make
from workers.runtime.errors import PermanentError

URL_BUCKET = "s3://s3.stamp.local:9000/dr"


def test_restore_moves_every_logical_file_and_checks_the_database_is_online(tmp_path) -> None:
    # Given a backup of a database with a data, a secondary data and a log file, and target directories
    engine, sim = make(tmp_path)
    sim.server.databases[DB].files.insert(1, DbFile("hosting_2", r"C:\SQL\DATA\hosting_2.ndf", "D", 3, "SECONDARY"))
    engine.backup(DB, STAGE)
    target = "appservice_hosting_dr"
    seen: list[int] = []
    # When it restores into another database
    result = engine.restore(target, STAGE, data_path="D:\\Data\\", log_path=r"L:\Logs", progress=seen.append)
    # Then every file moved, progress came from STATS, and the database is ONLINE with the source's rows
    restored = sim.server.databases[target]
    assert [f.physical for f in restored.files] == [r"D:\Data\appservice_hosting_dr_appservice_hosting.mdf",
                                                    r"D:\Data\appservice_hosting_dr_hosting_2.ndf",
                                                    r"L:\Logs\appservice_hosting_dr_appservice_hosting_log.ldf"]
    assert restored.rows == sim.server.databases[DB].rows and restored.state == "ONLINE"
    assert seen == list(range(10, 101, 10))
    assert (result.database, result.state, result.engine) == (target, "ONLINE", "sqlserver")


def test_restore_under_a_new_name_without_target_paths_moves_the_files_to_the_instance_defaults(tmp_path) -> None:
    # Given no target paths and an OFFLINE original whose files REPLACE alone would overwrite silently
    engine, sim = make(tmp_path)
    engine.backup(DB, STAGE)
    sim.server.databases[DB].state = "OFFLINE"
    # When it is restored under a new name
    assert engine.restore("appservice_hosting_copy", STAGE).state == "ONLINE"
    # Then MOVE put every file into the instance's default directory, named after the target
    assert [f.physical for f in sim.server.databases["appservice_hosting_copy"].files] == [
        r"C:\SQL\DATA\appservice_hosting_copy_appservice_hosting.mdf",
        r"C:\SQL\DATA\appservice_hosting_copy_appservice_hosting_log.ldf"]
    assert "MOVE N'appservice_hosting'" in sim.statements("RESTORE DATABASE")[0]
    # And the OFFLINE original's files were not touched
    assert sim.server.databases[DB].damaged_by_restore is None


def test_restore_in_place_replaces_the_database(tmp_path) -> None:
    # Given a backup and later changes to the database
    engine, sim = make(tmp_path)
    engine.backup(DB, STAGE)
    sim.server.databases[DB].rows["dbo.sites"] = 99
    # When it is restored in place (no sessions open)
    assert engine.restore(DB, STAGE).state == "ONLINE"
    # Then the backup's content is back
    assert sim.server.databases[DB].rows["dbo.sites"] == 12


def test_backup_to_s3_url_creates_the_credential_and_uses_the_s3_transfer_size(tmp_path) -> None:
    # Given an S3 staging URL, two stripes and keys to create the server credential with
    engine, sim = make(tmp_path, stripes=2, s3_access_key="AKIA1", s3_secret_key="s3cr'et-KEY")
    # When it backs up to the URL
    result = engine.backup(DB, f"{URL_BUCKET}/stamp1/db.bak")
    # Then the credential was created, both URLs used, MAXTRANSFERSIZE set, and size came from msdb
    urls = [f"{URL_BUCKET}/stamp1/db.stripe{i}of2.bak" for i in (1, 2)]
    assert URL_BUCKET in sim.server.credentials and result.parts == tuple(urls)
    assert "MAXTRANSFERSIZE = 20971520" in sim.statements("BACKUP")[0]
    assert result.size > 0 and result.checksum is None


def test_backup_to_url_without_a_credential_or_keys_fails_with_a_hint(tmp_path) -> None:
    engine, sim = make(tmp_path)
    with pytest.raises(PermanentError, match="no credential") as caught:
        engine.backup(DB, "s3://s3.local/dr/db.bak")
    assert "CREATE CREDENTIAL" in caught.value.hint and sim.statements("BACKUP") == []


def test_verify_and_check_on_their_own(tmp_path) -> None:
    # Given an ONLINE database and a valid backup
    engine, sim = make(tmp_path, verify=False)
    engine.backup(DB, STAGE)
    # When / Then check() and verify() each succeed on their own connection
    engine.check(DB)
    engine.verify(STAGE)
    assert len(sim.connections) == 3 and len(sim.statements("RESTORE VERIFYONLY")) == 1


def test_a_credential_the_login_may_not_alter_fails_without_showing_its_secret(tmp_path) -> None:
    # Given a credential that exists and a login without ALTER ANY CREDENTIAL
    engine, sim = make(tmp_path, username="operator", password="pw", s3_access_key="AKIA2",
                       s3_secret_key="ROTATED-SECRET")
    sim.server.credentials.add("s3://s3.local/dr")
    sim.server.logins["operator"] = Login("operator", "pw", database_roles={DB: {"db_backupoperator"}})
    # When / Then the ALTER fails permanently and neither message nor hint holds the secret
    with pytest.raises(PermanentError) as caught:
        engine.backup(DB, "s3://s3.local/dr/db.bak")
    assert caught.value.message.startswith("ALTER CREDENTIAL [s3://s3.local/dr] failed")
    assert "(15151)" in caught.value.message and "ROTATED-SECRET" not in caught.value.message + caught.value.hint


def test_restore_from_an_s3_url_uses_the_existing_credential(tmp_path) -> None:
    # Given a backup in S3 and a credential already on the server
    engine, sim = make(tmp_path)
    sim.server.credentials.add("s3://s3.local/dr")
    url = "s3://s3.local/dr/stamp1/db.bak"
    engine.backup(DB, url)
    # When / Then the restore reads from the URL and relocates the files to the given directory
    assert engine.restore("dr_copy", url, data_path="/restore").state == "ONLINE"
    assert [f.physical for f in sim.server.databases["dr_copy"].files] == [
        "/restore/dr_copy_appservice_hosting.mdf", "/restore/dr_copy_appservice_hosting_log.ldf"]
