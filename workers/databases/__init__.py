"""Database engines: the DatabaseEngine protocol, SQL Server (pyodbc) and PostgreSQL (pg_dump) engines."""
from workers.databases.base import (SKIPPED_NOT_PREFERRED, BackupResult, DatabaseEngine, Progress,
                                    RestoreResult)
from workers.databases.factory import build_engine
from workers.databases.postgres import PostgresEngine
from workers.databases.settings import DatabaseSettings
from workers.databases.sqlserver import SqlServerEngine

__all__ = ["SKIPPED_NOT_PREFERRED", "BackupResult", "DatabaseEngine", "DatabaseSettings", "PostgresEngine",
           "Progress", "RestoreResult", "SqlServerEngine", "build_engine"]
