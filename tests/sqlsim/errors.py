"""SQL Server messages as the ODBC driver hands them to pyodbc: numbers, SQLSTATEs, texts, exception classes.

An error is a list of diagnostic records; pyodbc joins them into one text
(``[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]<text> (<number>) (SQLExecDirectW); ...``)
and picks the exception class from the SQLSTATE of the first record. Informational messages (severity <= 10)
become ``cursor.messages`` tuples ``('[01000] (<number>)', '[Microsoft]...[SQL Server]<text>')``.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyodbc

PREFIX = "[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]"
DRIVER = "[Microsoft][ODBC Driver 18 for SQL Server]"

# number -> (sqlstate, message template) - texts as sys.messages holds them (English, language 1033)
TEXTS: dict[int, tuple[str, str]] = {
    102: ("42000", "Incorrect syntax near '{0}'."),
    207: ("42S22", "Invalid column name '{0}'."),
    208: ("42S02", "Invalid object name '{0}'."),
    229: ("42000", "The SELECT permission was denied on the object '{0}', database 'msdb', schema 'dbo'."),
    297: ("42000", "The user does not have permission to perform this action."),
    300: ("42000", "{0} permission was denied on object '{1}', database '{2}'."),
    262: ("42000", "{0} permission denied in database '{1}'."),
    911: ("42000", "Database '{0}' does not exist. Make sure that the name is entered correctly."),
    916: ("42000", "The server principal \"{0}\" is not able to access the database \"{1}\" under the current "
               "security context."),
    942: ("42000", "Database '{0}' cannot be opened because it is offline."),
    1205: ("40001", "Transaction (Process ID 61) was deadlocked on lock resources with another process and has "
                    "been chosen as the deadlock victim. Rerun the transaction."),
    1468: ("42000", "The operation cannot be performed on database \"{0}\" because it is involved in a database "
                    "mirroring session or an availability group. Some operations are not allowed on a database "
                    "that is participating in a database mirroring session or in an availability group."),
    1834: ("42000", "The file '{0}' cannot be overwritten.  It is being used by database '{1}'."),
    1844: ("42000", "{0} WITH COMPRESSION is not supported on {1}."),
    2520: ("42000", "Could not find database '{0}'. The database either does not exist, or was dropped before a "
                    "statement tried to use it. Verify if the database exists by querying the sys.databases "
                    "catalog view."),
    2571: ("42000", "User '{0}' does not have permission to run DBCC {1}."),
    3013: ("42000", "{0} is terminating abnormally."),
    3014: ("01000", "{0} successfully processed {1} pages in 0.{2:03d} seconds (160.800 MB/sec)."),
    3021: ("42000", "Cannot perform a backup or restore operation within a transaction."),
    3059: ("42000", "This BACKUP or RESTORE command is not supported on a database mirror or secondary replica."),
    3101: ("42000", "Exclusive access could not be obtained because the database is in use."),
    3104: ("42000", "RESTORE cannot operate on database '{0}' because it is configured for database mirroring "
                    "or has joined an availability group. If you intend to restore the database, use ALTER "
                    "DATABASE to remove mirroring or to remove the database from its availability group."),
    3132: ("42000", "The media set has {0} media families but only {1} are provided. All members must be "
                    "provided."),
    3154: ("42000", "The backup set holds a backup of a database other than the existing '{0}' database."),
    3169: ("42000", "The database was backed up on a server running version {0}. That version is incompatible "
                    "with this server, which is running version {1}. Either restore the database on a server "
                    "that supports the backup, or use a backup that is compatible with this server."),
    3156: ("42000", "File '{0}' cannot be restored to '{1}'. Use WITH MOVE to identify a valid location for the "
                    "file."),
    3187: ("42000", "RESTORE WITH CHECKSUM cannot be specified because the backup set does not contain checksum "
                    "information."),
    3189: ("42000", "Damage to the backup set was detected."),
    3203: ("42000", "Read on \"{0}\" failed: {1}"),
    3201: ("42000", "Cannot open backup device '{0}'. Operating system error {1}."),
    3202: ("42000", "Write on \"{0}\" failed: {1}"),
    3211: ("01000", "{0} percent processed."),
    3241: ("42000", "The media family on device '{0}' is incorrectly formed. SQL Server cannot process this "
                    "media family."),
    3262: ("01000", "The backup set on file 1 is valid."),
    3271: ("42000", "A nonrecoverable I/O error occurred on file \"{0}:\" {1}."),
    3634: ("42000", "The operating system returned the error '{0}' while attempting '{1}' on '{2}'."),
    3234: ("42000", "Logical file '{0}' is not part of database '{1}'. Use RESTORE FILELISTONLY to list the "
                    "logical file names."),
    3701: ("42000", "Cannot drop the database '{0}', because it does not exist or you do not have permission."),
    3702: ("42000", "Cannot drop database \"{0}\" because it is currently in use."),
    4035: ("01000", "Processed {0} pages for database '{1}', file '{2}' on file 1."),
    4104: ("42000", "The multi-part identifier \"{0}\" could not be bound."),
    4333: ("42000", "The database cannot be recovered because the log was not restored."),
    4208: ("42000", "The statement BACKUP LOG is not allowed while the recovery model is SIMPLE. Use BACKUP "
                    "DATABASE or change the recovery model using ALTER DATABASE."),
    4214: ("42000", "BACKUP LOG cannot be performed because there is no current database backup."),
    3117: ("42000", "The log or differential backup cannot be restored because no files are ready to "
                    "rollforward."),
    3135: ("42000", "The backup set in file '{0}' was created by {1} and cannot be used for this restore "
                    "operation."),
    4305: ("42000", "The log in this backup set begins at LSN {0}, which is too recent to apply to the database. "
                    "An earlier log backup that includes LSN {1} can be restored."),
    4326: ("42000", "The log in this backup set terminates at LSN {0}, which is too early to apply to the "
                    "database. A more recent log backup that includes LSN {1} can be restored."),
    4060: ("42000", "Cannot open database \"{0}\" requested by the login. The login failed."),
    5011: ("42000", "User does not have permission to alter database '{0}', the database does not exist, or the "
                    "database is not in a state that allows access checks."),
    5052: ("42000", "ALTER DATABASE is not permitted while a database is in the {0} state."),
    5061: ("42000", "ALTER DATABASE failed because a lock could not be placed on database '{0}'. Try again "
                    "later."),
    5069: ("42000", "ALTER DATABASE statement failed."),
    8928: ("42000", "Object ID 581577110, index ID 1, partition ID 72057594040549376: Page (1:{0}) could not "
                    "be processed.  See other errors for details."),
    8939: ("42000", "Table error: Object ID 581577110, index ID 1, partition ID 72057594040549376, alloc unit ID "
                    "72057594045792256 (type In-row data), page (1:{0}). Test (IS_OFF (BUF_IOERR, pBUF->bstat)) "
                    "failed. Values are 133129 and -4."),
    8989: ("42000", "CHECKDB found 0 allocation errors and {0} consistency errors in database '{1}'."),
    12824: ("42000", "The sp_configure value 'contained database authentication' must be set to 1 in order to "
                     "restore a contained database.  You may need to use RECONFIGURE to set the value_in_use."),
    15151: ("42000", "Cannot alter the credential '{0}', because it does not exist or you do not have "
                     "permission."),
    18456: ("28000", "Login failed for user '{0}'."),
}


# the same messages in German (sys.messages language_id 1031): code must go by number, not by text
GERMAN: dict[int, str] = {
    3013: "{0} wird fehlerbedingt beendet.",
    3202: "Fehler beim Schreiben auf \"{0}\": {1}",
    3211: "{0} Prozent verarbeitet.",
    3271: "Nicht behebbarer E/A-Fehler bei Datei \"{0}:\" {1}.",
}
OS_GERMAN = {"112(There is not enough space on the disk.)": "112(Auf dem Datenträger ist nicht genug Speicherplatz "
                                                            "vorhanden.)"}
LANGUAGE = {"language": "us_english"}       # set by the driver for the statement being run


@dataclass(frozen=True)
class Record:
    number: int
    text: str
    sqlstate: str

    def as_error_text(self) -> str:
        return f"[{self.sqlstate}] {PREFIX}{self.text} ({self.number})"

    def as_message(self) -> tuple[str, str]:
        return (f"[{self.sqlstate}] ({self.number})", f"{PREFIX}{self.text}")


def record(number: int, *args: object) -> Record:
    sqlstate, template = TEXTS[number]
    if LANGUAGE["language"] == "Deutsch" and number in GERMAN:
        template = GERMAN[number]
        args = tuple(OS_GERMAN.get(a, a) if isinstance(a, str) else a for a in args)
    return Record(number, template.format(*args), sqlstate)


class SqlError(Exception):
    """Raised inside the simulator; the cursor turns it into the pyodbc exception the driver would raise."""

    def __init__(self, *records: Record) -> None:
        super().__init__("; ".join(r.text for r in records))
        self.records = list(records)


def fail(number: int, *args: object, terminating: str | None = None) -> SqlError:
    """An error, followed by ``3013 <terminating> is terminating abnormally`` for BACKUP/RESTORE."""
    records = [record(number, *args)]
    if terminating:
        records.append(record(3013, terminating))
    return SqlError(*records)


_CLASSES: list[tuple[str, type[pyodbc.Error]]] = [
    ("28", pyodbc.InterfaceError), ("IM", pyodbc.InterfaceError), ("08", pyodbc.OperationalError),
    ("HYT", pyodbc.OperationalError), ("40001", pyodbc.OperationalError), ("42", pyodbc.ProgrammingError),
    ("07", pyodbc.Error), ("", pyodbc.Error),
]


def to_pyodbc(error: SqlError, call: str = "SQLExecDirectW") -> pyodbc.Error:
    first = error.records[0].sqlstate
    cls = next(c for prefix, c in _CLASSES if first.startswith(prefix))
    text = "; ".join(r.as_error_text() for r in error.records) + f" ({call})"
    return cls(first, text)


def driver_error(sqlstate: str, text: str, call: str = "SQLExecDirectW") -> pyodbc.Error:
    """A driver-level error without a SQL Server number (08S01 link failure, HYT00 timeout)."""
    cls = next(c for prefix, c in _CLASSES if sqlstate.startswith(prefix))
    return cls(sqlstate, f"[{sqlstate}] {DRIVER}{text} (0) ({call})")
