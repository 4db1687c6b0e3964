"""One autocommit pyodbc connection to SQL Server, and its connection string.

Every statement runs with autocommit (BACKUP/RESTORE refuse transactions) and is drained to the last result
set, so a call returns only when SQL Server finished and every error surfaces (mapped where it happens,
:mod:`workers.engines.sqlserver_errors`); ``STATS = N`` messages become progress callbacks.
"""
from __future__ import annotations

import contextlib
import logging
import re
from typing import Any, Callable

import pyodbc

from workers.engines.base import ProgressReporter
from workers.engines.odbc import Cursor, Message, clean_text, connection_string, drain, native_number
from workers.engines.settings import DatabaseSettings
from workers.engines.sqlserver_errors import classify
from workers.runtime.errors import ConfigurationError

log = logging.getLogger(__name__)

PROGRESS = 3211                                  # "%d percent processed." (the text is translated, the number not)
_PERCENT = re.compile(r"(?<!\d)(\d{1,3})(?!\d)")


class Session:
    """One autocommit connection: runs statements, drains them, maps errors where they happen."""

    def __init__(self, cursor: Cursor, login: str | None = None) -> None:
        self.cursor = cursor
        self.login = login
        self.recent: list[Message] = []

    def run(self, sql: str, *params: Any, action: str, on_message: Callable[[Message], None] | None = None,
            database: str | None = None) -> list[list[dict[str, Any]]]:
        self.recent = []

        def seen(message: Message) -> None:
            self.recent.append(message)
            log.debug("%s: %s", action, clean_text(message[1]))
            if on_message is not None:
                on_message(message)

        try:
            self.cursor.execute(sql, *params)
            return drain(self.cursor, seen)
        except pyodbc.Error as exc:
            raise classify(exc, action=action, recent=self.recent, login=self.login, database=database) from exc

    def first(self, sql: str, *params: Any, action: str) -> dict[str, Any] | None:
        sets = self.run(sql, *params, action=action)
        return sets[0][0] if sets and sets[0] else None

    def rows(self, sql: str, *params: Any, action: str) -> list[dict[str, Any]]:
        """The rows of the first result set."""
        return (self.run(sql, *params, action=action) or [[]])[0]

    def close(self) -> None:
        """Close the connection early (pyodbc: ``cursor.connection``); closing it again later is harmless."""
        with contextlib.suppress(Exception):
            self.cursor.connection.close()


def progress_from_messages(reporter: ProgressReporter) -> Callable[[Message], None]:
    def on_message(message: Message) -> None:
        found = _PERCENT.search(clean_text(message[1])) if native_number(message) == PROGRESS else None
        if found:
            reporter(int(found.group(1)))
    return on_message


def build_connection_string(s: DatabaseSettings) -> str:
    """The ODBC connection string for ``s`` (Microsoft driver or FreeTDS; SQL, Kerberos or Entra logins)."""
    driver = s.effective_driver
    freetds = "freetds" in driver.lower()
    instance = "\\" in s.server
    pairs: list[tuple[str, str | None]] = [("DRIVER", driver)]
    if freetds:
        pairs += [("SERVER", s.server), ("PORT", None if instance else str(s.effective_port)),
                  ("DATABASE", "master"), ("TDS_Version", "7.4"), ("ClientCharset", "UTF-8"),
                  ("Encryption", "request" if s.encrypt == "no" else "require")]
    else:
        pairs += [("SERVER", s.server if instance else f"tcp:{s.server},{s.effective_port}"),
                  ("DATABASE", "master"), ("Encrypt", s.encrypt),
                  ("TrustServerCertificate", "yes" if s.trust_server_certificate else "no"),
                  ("APP", "appservice-dr"), ("MultiSubnetFailover", "Yes" if s.multi_subnet_failover else None)]
    password = s.password.get_secret_value() if s.password is not None else None
    if s.auth == "kerberos":
        pairs.append(("Trusted_Connection", "yes"))
    elif freetds:
        if s.auth != "sql":
            raise ConfigurationError(f"database.auth = {s.auth} needs the Microsoft ODBC driver, not FreeTDS",
                                     hint="Set APPSVC_DR_DATABASE__DRIVER='ODBC Driver 18 for SQL Server' "
                                          "or use auth = sql / kerberos.")
    if s.auth in ("sql", "entra-password"):
        if not s.username:
            raise ConfigurationError(f"database.auth = {s.auth} needs database.username",
                                     hint="Set APPSVC_DR_DATABASE__USERNAME and APPSVC_DR_DATABASE__PASSWORD.")
        pairs += [("UID", s.username), ("PWD", password)]
    if s.auth == "entra-password":
        pairs.append(("Authentication", "ActiveDirectoryPassword"))
    elif s.auth == "entra-msi":
        pairs += [("Authentication", "ActiveDirectoryMsi"), ("UID", s.username)]
    return connection_string(pairs, always_brace=("DRIVER", "PWD"))
