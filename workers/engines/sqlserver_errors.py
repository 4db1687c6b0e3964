"""SQL Server / ODBC errors -> TransientError or PermanentError with a how-to-fix hint.

pyodbc puts every diagnostic record of a failed call into one text (``'[42000] ...(3201) (SQLExecDirectW);
[42000] ...(3013)'``). BACKUP and RESTORE end every failure with 3013 / 3014-style "terminating abnormally";
the useful cause is the error before it, so 3013 is combined with the preceding error and classified by it.
"""
from __future__ import annotations

from typing import Iterable

from workers.engines.odbc import Message, clean_text, error_numbers, error_parts, native_number
from workers.runtime.errors import ConfigurationError, DrError, PermanentError, TransientError

TERMINATING = {3013, 3271}      # "BACKUP/RESTORE DATABASE is terminating abnormally", generic I/O wrapper
INFO_MESSAGES = {0, 3014, 3211, 3262, 4035, 4037, 3267}    # progress, "processed N pages", "backup set is valid"

_CONNECTION = "APPSVC_DR_DATABASE__SERVER / APPSVC_DR_DATABASE__PORT"
_LOGIN = ("Check APPSVC_DR_DATABASE__USERNAME / APPSVC_DR_DATABASE__PASSWORD / APPSVC_DR_DATABASE__AUTH, that the "
          "login exists and is enabled, and that it may open master and the database (sysadmin, or "
          "db_backupoperator in each database plus dbcreator for restores).")
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
    262: (False, "Permission denied: grant the backup login db_backupoperator in the database "
                 "(BACKUP DATABASE) or dbcreator on the server (RESTORE)."),
    229: (False, "Permission denied: the backup login needs VIEW SERVER STATE and SELECT on msdb backup "
                 "history (or sysadmin)."),
    916: (False, "The login cannot access the database in this security context. " + _LOGIN),
    3059: (False, "On an Always On secondary only COPY_ONLY full backups are allowed: set "
                  "APPSVC_DR_DATABASE__COPY_ONLY=true, or back up on the primary."),
    3241: (False, "The backup is incomplete or not a SQL Server backup (media family incorrectly formed): take "
                  "a new backup; check that every stripe is present (APPSVC_DR_DATABASE__STRIPES)."),
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
                  "file names (set RESTORE_DATA_PATH / RESTORE_LOG_PATH)."),
    3101: (True, "The target database is in use (exclusive access needed for RESTORE): close its sessions "
                 "(ALTER DATABASE ... SET SINGLE_USER WITH ROLLBACK IMMEDIATE); the job is retried."),
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


def classify(exc: BaseException, *, action: str, recent: Iterable[Message] = ()) -> DrError:
    """Map a pyodbc error raised during ``action`` (e.g. "BACKUP DATABASE [x]") to our error hierarchy.

    ``recent`` holds the messages seen before the error: a lone 3013 is combined with the last real error
    among them so the operator sees the cause, and the cause decides transient vs. permanent.
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
    if "operating system error 112" in lowered or "not enough space on the disk" in lowered:
        return PermanentError(message, hint=_DISK_FULL)
    for number in causes:
        if number in RULES:
            transient, hint = RULES[number]
            return TransientError(message, hint=hint) if transient else PermanentError(message, hint=hint)
    if sqlstate in ("HYT00", "HYT01") or "timeout expired" in lowered:
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
