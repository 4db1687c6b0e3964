"""SQL Server / ODBC errors -> TransientError or PermanentError with a how-to-fix hint.

pyodbc puts every diagnostic record of a failed call into one text (``'[42000] ...(3201) (SQLExecDirectW);
[42000] ...(3013)'``). BACKUP and RESTORE end every failure with 3013 "terminating abnormally" (ALTER DATABASE
with 5069 "statement failed"); the useful cause is the error before it, so a lone 3013 is combined with the
preceding error and classified by it. Errors are recognised by their native number (and operating-system
error codes such as ``112(`` by number), never by English text, so a server in another language behaves the
same; only driver errors without a number (TLS, missing driver) are matched by their text.
"""
from __future__ import annotations

import re
from typing import Iterable

from workers.engines.odbc import Message, clean_text, error_numbers, error_parts, native_number
from workers.runtime.errors import ConfigurationError, DrError, PermanentError, TransientError

TERMINATING = {3013, 5069}      # "BACKUP/RESTORE ... is terminating abnormally", "ALTER DATABASE statement failed"
INFO_MESSAGES = {0, 3014, 3211, 3262, 4035, 4037, 3267}    # progress, "processed N pages", "backup set is valid"

_CONNECTION = "APPSVC_DR_DATABASE__SERVER / APPSVC_DR_DATABASE__PORT"
_CHAIN = ("The set's log backups do not continue the full backup's LSN chain (a log backup is missing: taken by "
          "another job, or not stored); `appsvc-dr artifacts list --set <set>` shows each backup's LSNs. Restore "
          "without them (`--no-logs`) or from a set whose chain is whole.")
_LOGIN = ("Check APPSVC_DR_DATABASE__USERNAME / APPSVC_DR_DATABASE__PASSWORD / APPSVC_DR_DATABASE__AUTH, that the "
          "login exists and is enabled, and that it may open master and the database (sysadmin, or "
          "db_backupoperator in each database plus dbcreator for restores).")
_OS_ERROR = re.compile(r"(?<![\d.])(\d{1,5})\(")    # "Operating system error 112(...)" in any language
_SP_CONFIGURE = ("EXEC sp_configure 'contained database authentication', 1; RECONFIGURE;")
_STAGING = ("The SQL Server service account (not the worker's account) opens the backup file: give it write "
            "access (read for restore/verify) to the staging share or directory, make sure the directory "
            "exists on the SQL Server host, and use a UNC path SQL Server can reach.")

# native error number -> (transient?, hint)
RULES: dict[int, tuple[bool, str]] = {
    3201: (False, _STAGING),
    3013: (False, "BACKUP/RESTORE stopped; the error before it in the SQL Server error log names the cause."),
    4060: (False, "The login cannot open the database it asked for. " + _LOGIN),
    18456: (False, "Login failed. " + _LOGIN),
    18452: (False, "The login is from an untrusted domain: use auth = sql, or fix Kerberos (SPN, keytab). "),
    262: (False, "Permission denied: {grant}"),
    300: (False, "Permission denied: reading Always On state (sys.dm_hadr_availability_replica_states) needs "
                 "VIEW SERVER STATE: GRANT VIEW SERVER STATE TO {login}; on every replica, or set "
                 "APPSVC_DR_DATABASE__AG_OVERRIDE=true to back up where connected."),
    229: (False, "Permission denied: the backup login needs VIEW SERVER STATE and SELECT on msdb backup "
                 "history (or sysadmin)."),
    916: (False, "The login cannot access the database in this security context. " + _LOGIN),
    3059: (False, "On an Always On secondary only COPY_ONLY full backups are allowed: set "
                  "APPSVC_DR_DATABASE__COPY_ONLY=true, or back up on the primary."),
    3241: (False, "The backup is incomplete, damaged, not a SQL Server backup, or taken on a newer SQL Server "
                  "version than this server can read (media family incorrectly formed): take a new backup, check "
                  "that every stripe is present (`appsvc-dr artifacts list --set <set>`: <db>.bak.1ofN ... NofN), or "
                  "restore onto an instance of the "
                  "same or a newer version."),
    3183: (False, "The backup is damaged (RESTORE found a corrupt page): take a new backup; run DBCC CHECKDB "
                  "on the source database."),
    3189: (False, "The backup is damaged (checksum failure): take a new backup."),
    3203: (False, "Reading the backup failed: the file is damaged or was truncated; take a new backup."),
    3169: (False, "The backup comes from a newer SQL Server version than the restore target: restore onto an "
                  "instance of the same or a newer version."),
    3234: (False, "A MOVE names a logical file that is not in the backup: compare RESTORE FILELISTONLY."),
    5133: (False, "SQL Server cannot create a restored file: check APPSVC_DR_DATABASE__RESTORE_DATA_PATH / "
                  "RESTORE_LOG_PATH exist on the SQL Server host and its service account may write there."),
    3156: (False, "A restored file cannot be placed: set APPSVC_DR_DATABASE__RESTORE_DATA_PATH and "
                  "RESTORE_LOG_PATH (RESTORE ... MOVE) to directories on the target SQL Server."),
    1834: (False, "A restored file would overwrite a file another database uses: restore under other "
                  "file names (--data-path / --log-path; drills: RESTORE_DATA_PATH / RESTORE_LOG_PATH)."),
    3101: (False, "The target database has open sessions and RESTORE needs exclusive access; retrying does not "
                  "help while the App Service controllers stay connected. Stop them, or rerun the restore with "
                  "--force-disconnect (ALTER DATABASE {database} SET SINGLE_USER WITH ROLLBACK IMMEDIATE)."),
    3104: (False, "The target database has joined an availability group, which RESTORE cannot replace: on the "
                  "primary run ALTER AVAILABILITY GROUP [<ag>] REMOVE DATABASE {database} (on a secondary: "
                  "ALTER DATABASE {database} SET HADR OFF), restore, then add it back to the group."),
    12824: (False, "The backup is of a contained database (App Service databases are partially contained) and "
                   "this server does not allow them: as sysadmin run " + _SP_CONFIGURE + " then restore again."),
    1844: (False, "This edition (Express or Web) cannot compress backups: set "
                  "APPSVC_DR_DATABASE__COMPRESSION=false for this server."),
    5052: (False, "The database is RESTORING (a restore WITH NORECOVERY, or one that stopped halfway): finish it "
                  "with RESTORE DATABASE {database} WITH RECOVERY, or drop it with DROP DATABASE {database}."),
    3634: (False, "Another process (a second SQL Server instance, antivirus, a backup agent) holds the file; "
                  "free it, or restore under other file names (RESTORE_DATA_PATH / RESTORE_LOG_PATH)."),
    3132: (False, "The backup is striped and not every stripe was given: check that the set holds every stripe "
                  "(`appsvc-dr artifacts list --set <set>`: <db>.bak.1ofN ... NofN)."),
    3187: (False, "The backup has no checksums (taken WITHOUT CHECKSUM): take a new backup WITH CHECKSUM."),
    3154: (False, "The backup holds another database than the one it would replace: check --database / "
                  "--target-database."),
    1468: (False, "The database is in an availability group, where this operation is not allowed: remove it "
                  "from the group first (ALTER AVAILABILITY GROUP [<ag>] REMOVE DATABASE {database})."),
    942: (False, "The database is OFFLINE: bring it online (ALTER DATABASE {database} SET ONLINE) or remove it "
                 "from APPSVC_DR_DATABASE__DATABASES."),
    911: (False, "The database does not exist on this server: check APPSVC_DR_DATABASE__DATABASES."),
    5011: (False, "The login may not alter the database (or it does not exist): grant ALTER ANY DATABASE or "
                  "db_owner, e.g. ALTER SERVER ROLE dbcreator ADD MEMBER {login};"),
    3702: (False, "The database still has sessions: end them (ALTER DATABASE {database} SET SINGLE_USER WITH "
                  "ROLLBACK IMMEDIATE) and drop it again."),
    2571: (False, "DBCC CHECKDB needs sysadmin or db_owner: ALTER ROLE db_owner ADD MEMBER {login}; in the "
                  "database."),
    8928: (False, "DBCC CHECKDB found corruption in the restored copy: the backup holds a damaged database; run "
                  "DBCC CHECKDB on the source and take a new backup."),
    8939: (False, "DBCC CHECKDB found a damaged page in the restored copy: the backup holds a damaged database; "
                  "run DBCC CHECKDB on the source and take a new backup."),
    8989: (False, "DBCC CHECKDB found corruption in the restored copy: the backup holds a damaged database; run "
                  "DBCC CHECKDB on the source and take a new backup."),
    4208: (False, "The database uses the SIMPLE recovery model, which has no log backups: back it up with full "
                  "backups only, or switch it to FULL (ALTER DATABASE {database} SET RECOVERY FULL) and take a "
                  "full backup."),
    4214: (False, "No full backup has started the log chain (COPY_ONLY fulls do not): take one normal full "
                  "backup (APPSVC_DR_DATABASE__COPY_ONLY=false once, or the DBA's own job) before log backups."),
    4305: (False, _CHAIN),
    4326: (False, _CHAIN),
    3117: (False, "RESTORE LOG found no database restored WITH NORECOVERY to apply it to: restore the full "
                  "backup of the same set first (`appsvc-dr restore database` does both)."),
    3135: (False, "A full backup was given where a log backup belongs, or the other way round: check the set's "
                  "artifacts (<db>.bak full, <db>.log-<LSN>.trn log backups)."),
    3271: (True, "An I/O error on the backup device, usually the staging share dropping for a moment; the job "
                 "is retried. If it persists, check the share, the network path and the file server's log."),
    5061: (True, "Another session holds a lock on the database; the job is retried."),
    3023: (True, "Another backup or file operation on the database is running; the job is retried."),
    1205: (True, "Chosen as a deadlock victim; the job is retried."),
    976: (True, "The database is an Always On replica that is not accessible right now; the job is retried."),
    983: (True, "The Always On replica is not in a readable / accessible state right now; the job is retried."),
}
_DISK_FULL = ("The backup target is full (operating system error 112): free space on the staging share or "
              "point the staging path at a larger one; APPSVC_DR_DATABASE__COMPRESSION=true shrinks backups.")
_TLS = ("The server certificate was not trusted: install the issuing CA on the worker, or (test labs only) "
        "set APPSVC_DR_DATABASE__TRUST_SERVER_CERTIFICATE=true; APPSVC_DR_DATABASE__ENCRYPT controls TLS.")
_DRIVER = ("The ODBC driver named in APPSVC_DR_DATABASE__DRIVER is not installed: install msodbcsql18 "
           "('ODBC Driver 18 for SQL Server') or tdsodbc and set the driver to 'FreeTDS'.")


def _grant(action: str, login: str, database: str) -> str:
    """The statement that gives ``login`` what ``action`` needs (error 262)."""
    if action.upper().startswith("BACKUP"):
        return (f"BACKUP DATABASE needs db_backupoperator in the database: USE {database}; ALTER ROLE "
                f"db_backupoperator ADD MEMBER {login};")
    return (f"RESTORE (also VERIFYONLY / FILELISTONLY / HEADERONLY) needs CREATE DATABASE on the server: ALTER "
            f"SERVER ROLE dbcreator ADD MEMBER {login}; (or GRANT CREATE ANY DATABASE TO {login};). Without it, "
            "backups are verified only by BACKUP ... WITH CHECKSUM (APPSVC_DR_DATABASE__VERIFY_FALLBACK=checksum, "
            "the default). `appsvc-dr config check --connect` lists every permission the login lacks.")


def _bracket(name: str | None, placeholder: str) -> str:
    return "[" + name.replace("]", "]]") + "]" if name else placeholder


def os_errors(text: str) -> set[int]:
    """Operating-system error codes in a SQL Server message (``112(There is not enough space...)`` -> 112)."""
    return {int(n) for n in _OS_ERROR.findall(text)}


def classify(exc: BaseException, *, action: str, recent: Iterable[Message] = (), login: str | None = None,
             database: str | None = None) -> DrError:
    """Map a pyodbc error raised during ``action`` (e.g. "BACKUP DATABASE [x]") to our error hierarchy.

    ``recent`` holds the messages seen before the error: a lone 3013 is combined with the last real error
    among them so the operator sees the cause, and the cause decides transient vs. permanent. ``login`` and
    ``database`` fill the statements a hint asks the operator to run.
    """
    sqlstate, raw = error_parts(exc)
    text, numbers = clean_text(raw), error_numbers(raw)
    causes = [n for n in numbers if n not in TERMINATING and n > 0]
    if not causes and any(n in TERMINATING for n in numbers):
        earlier = [m for m in recent if (native_number(m) or 0) not in INFO_MESSAGES]
        if earlier:
            text = f"{clean_text(earlier[-1][1])}; {text}"
            causes = [native_number(earlier[-1]) or 0]
    message = f"{action} failed: {text}"
    lowered = text.lower()
    if "can't open lib" in lowered or sqlstate == "IM002" or "data source name not found" in lowered:
        return ConfigurationError(message, hint=_DRIVER)
    if "certificate verify failed" in lowered or "ssl provider" in lowered or "certificate chain" in lowered:
        return PermanentError(message, hint=_TLS)
    if 112 in os_errors(text) and any(n in (3201, 3202, 3203, 3271) for n in causes):
        return PermanentError(message, hint=_DISK_FULL)
    names = {"login": _bracket(login, "[<login>]"), "database": _bracket(database, "[<database>]")}
    for number in causes:
        if number in RULES:
            transient, hint = RULES[number]
            hint = hint.format(grant=_grant(action, **names), **names)
            return TransientError(message, hint=hint) if transient else PermanentError(message, hint=hint)
    if sqlstate in ("HYT00", "HYT01"):
        return TransientError(message, hint="The server did not answer in time (login timeout "
                                            "APPSVC_DR_DATABASE__TIMEOUT, statement timeout "
                                            "APPSVC_DR_DATABASE__QUERY_TIMEOUT); the job is retried.")
    if sqlstate.startswith("08") or sqlstate == "40001":
        return TransientError(message, hint=f"The connection to SQL Server failed or dropped; the job is retried. "
                                            f"If it persists, check {_CONNECTION} and the network path.")
    if any(n in TERMINATING for n in numbers):
        transient, hint = RULES[3013]
        return PermanentError(message, hint=hint)
    shown = f" (error {causes[0]})" if causes else (f" (SQLSTATE {sqlstate})" if sqlstate else "")
    return PermanentError(message, hint=f"SQL Server refused the statement{shown}: look the error up in the SQL "
                                        "Server documentation and the server's error log, fix it, then "
                                        "`appsvc-dr dlq replay db-backup`.")
