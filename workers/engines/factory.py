"""Build the configured :class:`~workers.engines.base.DatabaseEngine` from :class:`DatabaseSettings`."""
from __future__ import annotations

import shutil

from workers.engines.base import DatabaseEngine
from workers.engines.odbc import ConnectFn
from workers.engines.settings import DatabaseSettings
from workers.runtime.errors import ConfigurationError


def build_engine(settings: DatabaseSettings, *, connect: ConnectFn | None = None) -> DatabaseEngine:
    """The engine ``settings.engine`` names, validated so a bad configuration fails at start-up.

    With the real pyodbc (``connect`` not given) the ODBC driver must be installed; the PostgreSQL engine
    also needs pg_dump and pg_restore. Errors name the setting, never a password.
    """
    if connect is None:
        _require_driver(settings.effective_driver)
    if settings.engine == "sqlserver":
        from workers.engines.sqlserver import SqlServerEngine
        return SqlServerEngine(settings, connect=connect)
    from workers.engines.postgres import PostgresEngine
    for tool, setting in ((settings.pg_dump, "PG_DUMP"), (settings.pg_restore, "PG_RESTORE")):
        if shutil.which(tool) is None:
            raise ConfigurationError(f"database.{setting.lower()} {tool!r} is not an executable on PATH",
                                     hint=f"Install postgresql-client or set APPSVC_DR_DATABASE__{setting} "
                                          "to the full path of the tool.")
    return PostgresEngine(settings, connect=connect)


def _require_driver(driver: str) -> None:
    import pyodbc

    installed = pyodbc.drivers()
    if driver not in installed:
        raise ConfigurationError(f"ODBC driver {driver!r} (database.driver) is not installed; installed: "
                                 f"{', '.join(installed) or 'none'}",
                                 hint="Install msodbcsql18 ('ODBC Driver 18 for SQL Server'), tdsodbc "
                                      "('FreeTDS') or odbc-postgresql ('PostgreSQL Unicode'), or set "
                                      "APPSVC_DR_DATABASE__DRIVER to an installed driver.")
