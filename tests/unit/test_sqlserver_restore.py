"""SQL Server engine restores, BACKUP TO URL (S3) and stand-alone verify/check, against the scripted fake."""
from __future__ import annotations

import pytest

from tests.unit.fake_pyodbc import Expect, backup_ok as backup, progress_sets, rows, sql_error, verify_ok as verify
from tests.unit.test_sqlserver_engine import DB, STAGE, history, lookup, make
from workers.engines import sqlserver_sql as tsql
from workers.runtime.errors import PermanentError


def test_restore_moves_every_logical_file_and_checks_the_database_is_online() -> None:
    # Given a backup with a data, a secondary data and a log file, and target directories
    target = "appservice_hosting_dr"
    filelist = rows(["LogicalName", "PhysicalName", "Type", "FileGroupName", "FileID"],
                    ("hosting", r"C:\SQL\hosting.mdf", "D", "PRIMARY", 1),
                    ("hosting_2", r"C:\SQL\hosting_2.ndf", "D", "SECONDARY", 3),
                    ("hosting_log", r"C:\SQL\hosting_log.ldf", "L", None, 2))
    restore = (f"RESTORE DATABASE [{target}] FROM DISK = N'{STAGE}' WITH REPLACE, RECOVERY, "
               r"MOVE N'hosting' TO N'D:\Data\appservice_hosting_dr_hosting.mdf', "
               r"MOVE N'hosting_2' TO N'D:\Data\appservice_hosting_dr_hosting_2.ndf', "
               r"MOVE N'hosting_log' TO N'L:\Logs\appservice_hosting_dr_hosting_log.ldf', STATS = 10")
    engine, fake = make([Expect(f"RESTORE FILELISTONLY FROM DISK = N'{STAGE}'", results=[filelist]),
                         Expect(restore, results=progress_sets(30, 60, 90)),
                         lookup(name=target)])
    seen: list[int] = []
    # When it restores into another database
    result = engine.restore(target, STAGE, data_path="D:\\Data\\", log_path=r"L:\Logs", progress=seen.append)
    # Then every file moved, progress came from STATS, and the database was checked ONLINE
    fake.assert_done()
    assert seen == [30, 60, 90, 100]
    assert (result.database, result.state, result.engine) == (target, "ONLINE", "sqlserver")


def test_restore_without_target_paths_keeps_the_files_and_fails_unless_online() -> None:
    # Given no target paths and a database left RESTORING
    filelist = rows(["LogicalName", "PhysicalName", "Type"], ("hosting", "/var/opt/mssql/data/h.mdf", "D"))
    engine, fake = make([Expect(f"RESTORE FILELISTONLY FROM DISK = N'{STAGE}'", results=[filelist]),
                         Expect(f"RESTORE DATABASE [appservice_hosting] FROM DISK = N'{STAGE}' WITH REPLACE, "
                                "RECOVERY, STATS = 10", results=progress_sets(100)),
                         lookup(state="RESTORING")])
    # When / Then the restore ran without MOVE and the state check fails it
    with pytest.raises(PermanentError, match="RESTORING, not ONLINE"):
        engine.restore(DB, STAGE)
    fake.assert_done()


def test_backup_to_s3_url_creates_the_credential_and_uses_the_s3_transfer_size() -> None:
    # Given an S3 staging URL, two stripes and keys to create the server credential with
    urls = [f"s3://s3.stamp.local:9000/dr/stamp1/db.stripe{i}of2.bak" for i in (1, 2)]
    statement = ("BACKUP DATABASE [appservice_hosting] TO " + ", ".join(f"URL = N'{u}'" for u in urls)
                 + " WITH CHECKSUM, FORMAT, COMPRESSION, COPY_ONLY, STATS = 10, MAXTRANSFERSIZE = 20971520")
    credential = ("CREATE CREDENTIAL [s3://s3.stamp.local:9000/dr] WITH IDENTITY = N'S3 Access Key', "
                  "SECRET = N'AKIA1:s3cr''et-KEY'")
    engine, fake = make([lookup(), Expect(tsql.CREDENTIAL_EXISTS, ("s3://s3.stamp.local:9000/dr",), [rows(["name"])]),
                         Expect(credential), backup(statement, 50, 100), history(device=urls[0]),
                         Expect("RESTORE VERIFYONLY FROM " + ", ".join(f"URL = N'{u}'" for u in urls)
                                + " WITH CHECKSUM")],
                        stripes=2, s3_access_key="AKIA1", s3_secret_key="s3cr'et-KEY")
    # When it backs up to the URL
    result = engine.backup(DB, "s3://s3.stamp.local:9000/dr/stamp1/db.bak")
    # Then the credential was created, both URLs used, and size came from msdb
    fake.assert_done()
    assert result.parts == tuple(urls) and result.size == 10485760 and result.checksum is None


def test_backup_to_url_without_a_credential_or_keys_fails_with_a_hint() -> None:
    # Given no credential on the server and no keys configured
    engine, fake = make([lookup(), Expect(tsql.CREDENTIAL_EXISTS, ("s3://s3.local/dr",), [rows(["name"])])])
    # When / Then
    with pytest.raises(PermanentError, match="no credential") as caught:
        engine.backup(DB, "s3://s3.local/dr/db.bak")
    assert "CREATE CREDENTIAL" in caught.value.hint
    fake.assert_done()


def test_verify_and_check_on_their_own() -> None:
    # Given an ONLINE database and a valid backup
    engine, fake = make([lookup(), verify(STAGE)])
    # When / Then check() and verify() each succeed on their own connection
    engine.check(DB)
    engine.verify(STAGE)
    fake.assert_done()
    assert len(fake.connections) == 2


def test_existing_credential_is_updated_with_rotated_keys_and_its_secret_never_shows() -> None:
    # Given a credential that exists and keys in the settings, and an ALTER that SQL Server refuses
    name = "s3://s3.local/dr"
    alter = ("ALTER CREDENTIAL [s3://s3.local/dr] WITH IDENTITY = N'S3 Access Key', "
             "SECRET = N'AKIA2:ROTATED-SECRET'")
    engine, fake = make([lookup(), Expect(tsql.CREDENTIAL_EXISTS, (name,), [rows(["name"], (name,))]),
                         Expect(alter, error=sql_error((15151, "Cannot alter the credential, because it does not "
                                                               "exist or you do not have permission.")))],
                        s3_access_key="AKIA2", s3_secret_key="ROTATED-SECRET")
    # When / Then the failure is permanent and neither message nor hint holds the secret
    with pytest.raises(PermanentError) as caught:
        engine.backup(DB, "s3://s3.local/dr/db.bak")
    assert caught.value.message.startswith("ALTER CREDENTIAL [s3://s3.local/dr] failed")
    assert "ROTATED-SECRET" not in caught.value.message + caught.value.hint
    fake.assert_done()


def test_restore_from_an_s3_url_uses_the_existing_credential() -> None:
    # Given a backup in S3 and a credential already on the server
    url, name = "s3://s3.local/dr/stamp1/db.bak", "s3://s3.local/dr"
    filelist = rows(["LogicalName", "PhysicalName", "Type"], ("hosting", "/var/opt/mssql/data/h.mdf", "D"))
    engine, fake = make([Expect(tsql.CREDENTIAL_EXISTS, (name,), [rows(["name"], (name,))]),
                         Expect(f"RESTORE FILELISTONLY FROM URL = N'{url}'", results=[filelist]),
                         Expect(f"RESTORE DATABASE [dr_copy] FROM URL = N'{url}' WITH REPLACE, RECOVERY, "
                                "MOVE N'hosting' TO N'/restore/dr_copy_hosting.mdf', STATS = 10",
                                results=progress_sets(100)),
                         lookup(name="dr_copy")], restore_data_path="/restore")
    # When / Then the restore reads from the URL and relocates the file to the configured directory
    assert engine.restore("dr_copy", url).state == "ONLINE"
    fake.assert_done()
