"""A behavioural SQL Server simulator for the tests: an in-process instance behind pyodbc's interface.

The SQL Server engine is tested against this model instead of a fake that matches SQL strings: every statement
is tokenized and parsed by a small grammar per statement (anything else is error 102), runs against modelled
state, writes and reads real backup files on a local directory, and answers with SQL Server's error numbers,
SQLSTATEs and message texts in the shapes ODBC Driver 18 gives pyodbc. What it models, and the source followed:

- Connections: UID/PWD checked against logins (18456, SQLSTATE 28000, pyodbc.InterfaceError), the
  connection's database must be accessible (4060); network/TLS refusals are driver errors without a number
  (08001/08S01/HYT00), also mid-statement (``faults.link_error``). Several instances and AG listeners:
  ``network.Network`` (a listener reaches the primary).
  https://learn.microsoft.com/en-us/sql/relational-databases/errors-events/mssqlserver-18456-database-engine-error
- Result streaming: one result per BACKUP/RESTORE message (STATS ``N percent processed`` 3211, 4035, 3014),
  ``nextset()`` raising an error sent later, undrained statements failing the test (driver.py; pyodbc wiki).
- BACKUP DATABASE ... TO DISK/URL WITH CHECKSUM, FORMAT, INIT, COMPRESSION, COPY_ONLY, STATS, MAXTRANSFERSIZE,
  BUFFERCOUNT (https://learn.microsoft.com/en-us/sql/t-sql/statements/backup-transact-sql): a transaction
  (3021), missing (911) or offline (942) database, db_backupoperator/db_owner (262 "BACKUP DATABASE permission
  denied"), COMPRESSION on Express/Web (1844; "Backup compression" in "Editions and supported features of SQL
  Server 2022"), a non-COPY_ONLY full on a secondary replica (3059), a missing directory or access denied
  (3201 with OS error 3 / 5), a TDE database compressed on 2016/2017 without MAXTRANSFERSIZE > 65536 (msdb
  compressed_backup_size = backup_size: the encrypted pages do not shrink; BACKUP "MAXTRANSFERSIZE"), the
  backing-up instance in the header's ServerName, a share that drops mid-backup (3271 with OS error 64), a full disk (3202 with OS
  error 112); every failure ends with 3013 "... is terminating abnormally". Stripes write one media family
  per device; msdb.dbo.backupset/backupmediafamily record the backup (LSNs as numeric(25,0)). BACKUP LOG:
  SIMPLE recovery (4208), no normal full yet - COPY_ONLY fulls do not start the log chain (4214); a log backup
  clears log_reuse_wait_desc = LOG_BACKUP (https://learn.microsoft.com/en-us/sql/relational-databases/backup-restore/copy-only-backups-sql-server);
  each log backup begins at the LastLSN of the one before (the log chain). msdb.dbo.backupset also gives
  backup_finish_date (server-local, compared with GETDATE()) and software_{major,minor,build}_version.
  A tail-log backup ``BACKUP LOG ... WITH NORECOVERY`` needs exclusive access (3101 with sessions) and leaves the
  database RESTORING (https://learn.microsoft.com/en-us/sql/relational-databases/backup-restore/tail-log-backups-sql-server).
- RESTORE VERIFYONLY / FILELISTONLY / HEADERONLY / DATABASE ... WITH REPLACE, RECOVERY|NORECOVERY, MOVE,
  STATS, CHECKSUM (https://learn.microsoft.com/en-us/sql/t-sql/statements/restore-statements-transact-sql,
  restore-statements-arguments-transact-sql, -headeronly-, -filelistonly-, -verifyonly-): all need CREATE
  DATABASE (262 "CREATE DATABASE permission denied in database 'master'"; RESTORE Permissions section), a
  missing file (3201), a damaged/truncated/foreign file (3241), a missing stripe (3132), WITH CHECKSUM on a
  backup without checksums (3187), a backup from a newer version (3169 for RESTORE DATABASE; the older
  server cannot read its header: 3241 for the others; "Compatibility support" in RESTORE), a target with open
  sessions (3101; MSSQLSERVER_3101), joined to an availability group (3104), another database's backup over
  an existing one without REPLACE (3154), a partially contained backup while 'contained database
  authentication' is 0 (12824; https://learn.microsoft.com/en-us/sql/database-engine/configure-windows/contained-database-authentication-server-configuration-option),
  MOVE naming an unknown logical file (3234), a file owned by another ONLINE database (1834 + 3156); an
  OFFLINE database's files are overwritten silently under REPLACE (the safety check REPLACE removes), a file
  locked by another process (3634 with OS error 32), a device that fails halfway (``faults.restore_fails_after``:
  3203, the target left RESTORING and unrecoverable, 4333). ``RESTORE DATABASE x WITH RECOVERY`` brings a
  RESTORING database (e.g. after a tail-log backup, or restored WITH NORECOVERY before its log backups) ONLINE
  ("Recover a database without restoring data" in RESTORE Statements). HEADERONLY reports DatabaseName,
  SoftwareVersionMajor/Minor/Build, HasBackupChecksums and Containment (restore-statements-headeronly-transact-sql).
- RESTORE LOG ... WITH NORECOVERY | RECOVERY onto a database restored WITH NORECOVERY
  (https://learn.microsoft.com/en-us/sql/relational-databases/backup-restore/apply-transaction-log-backups-sql-server):
  no RESTORING database (3117), a log that begins after the restored LSN (4305, "too recent") or ends before
  it (4326, "too early"), a full backup given to RESTORE LOG or a log backup to RESTORE DATABASE (3135); the
  log's content replaces the rows (a log restore is visible in the data).
- ALTER DATABASE SET SINGLE_USER | MULTI_USER | OFFLINE | ONLINE [WITH ROLLBACK IMMEDIATE | NO_WAIT]
  (alter-database-transact-sql-set-options): RESTORING (5052), an AG database (1468), sessions without a
  termination clause (5061), no permission (5011), all followed by 5069. DROP DATABASE: in use (3702),
  missing (3701), or an error a test forces (``faults.drop_refused``). DBCC CHECKDB (name) WITH NO_INFOMSGS,
  ALL_ERRORMSGS: each corrupt page gives 8939 + 8928, then 8989 (dbcc-checkdb-transact-sql;
  https://learn.microsoft.com/en-us/sql/relational-databases/errors-events/mssqlserver-8939-database-engine-error).
  CREATE/ALTER CREDENTIAL (15151 when altering a missing one).
- Security fixes as one ``;`` batch (security.py): USE, GRANT <server permission> TO, ALTER SERVER ROLE
  [dbcreator] ADD MEMBER, IF USER_ID(N'x') IS NULL CREATE USER, ALTER ROLE [db_backupoperator] ADD MEMBER;
  sysadmin only (15247), an unknown user (15151) or login (15007).
- Catalog: sys.databases, [db].sys.tables (one row per ``Database.rows`` table; 911 / 942 / 916),
  sys.master_files, sys.configurations, sys.credentials, msdb.dbo.backupset / backupmediafamily /
  restorehistory (a row per completed RESTORE DATABASE / LOG; sys.databases.create_date is the restore's time)
  (SELECT denied: 229; injectable errors such as a 1205 deadlock),
  sys.availability_groups, sys.availability_replicas (group_id, endpoint_url, backup_priority),
  sys.dm_hadr_availability_replica_states (needs VIEW SERVER STATE: 300 + 297; a JOIN on replica_id works;
  every replica's row on every replica - a real secondary shows only its own), sys.databases.replica_id (the
  local replica) and is_encrypted, sys.dm_hadr_database_replica_states (is_local, is_primary_replica,
  group_id), sys.dm_exec_sessions (one user session per ``Database.sessions``), DB_ID(), HAS_PERMS_BY_NAME (server permissions, CREATE DATABASE in master, BACKUP
  DATABASE / ALTER in a database from db_backupoperator / db_owner; has-perms-by-name-transact-sql),
  IS_SRVROLEMEMBER (sysadmin, dbcreator: server-level-roles), SUSER_SNAME(), SERVERPROPERTY('EngineEdition' |
  'Edition' | 'ProductVersion' | 'InstanceDefaultDataPath' ...) and sys.fn_hadr_backup_is_preferred_replica
  (preferences PRIMARY, SECONDARY = "Prefer Secondary", SECONDARY_ONLY, NONE, then backup priority among
  connected replicas; 1 outside an AG, 0 for a missing database as in 2019 CU20+).
- Messages in another language (``server.language = "Deutsch"``) for progress, I/O and 3013: numbers stay.

Not modelled: the data pages themselves (a backup carries the row counts and corrupt pages), point-in-time
restore (STOPAT), differential backups, TDE beyond the compression ratio, real S3 (URL devices are files under
the root once a
credential exists), timing, EXEC (sp_configure is read through sys.configurations only).
"""
from __future__ import annotations

from pathlib import Path

from tests.sqlsim.driver import Simulator
from tests.sqlsim.errors import SqlError
from tests.sqlsim.state import AvailabilityGroup, Database, DbFile, Faults, Login, Replica, Server

__all__ = ["AvailabilityGroup", "Database", "DbFile", "Faults", "Login", "Replica", "Server", "Simulator",
           "SqlError", "app_service_server"]

PASSWORD = "P@ss;w}rd-SECRET-42"


def app_service_server(root: Path, **values: object) -> Server:
    """An instance with the two App Service databases (partially contained, FULL recovery), a sysadmin login
    ``backup`` and the staging directory ``\\\\fileserver\\staging\\stamp1`` created."""
    server = Server(root=root, **values)  # type: ignore[arg-type]
    server.logins["backup"] = Login("backup", PASSWORD, sysadmin=True)
    for name in ("appservice_hosting", "appservice_metering"):
        server.add_database(name, containment="PARTIAL")
    server.make_dir("\\\\fileserver\\staging\\stamp1")
    return server
