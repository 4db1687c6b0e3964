"""Database engines: the DatabaseEngine protocol, SQL Server (pyodbc) and PostgreSQL (pg_dump) engines."""
from workers.engines.base import (SKIPPED_NOT_PREFERRED, BackupResult, DatabaseEngine, Progress,
                                    RestoreOptions, RestoreResult)
from workers.engines.factory import build_engine
from workers.engines.postgres import PostgresEngine
from workers.engines.settings import DatabaseSettings
from workers.engines.sqlserver import SqlServerEngine

__all__ = ["SKIPPED_NOT_PREFERRED", "BackupResult", "DatabaseEngine", "DatabaseSettings", "PostgresEngine",
           "Progress", "RestoreOptions", "RestoreResult", "SqlServerEngine", "build_engine"]
