"""PostgreSQL failures (pg_dump / pg_restore stderr, psqlODBC errors) -> TransientError or PermanentError.

libpq reports the same way through every client, so one text classifier serves the command-line tools and
pyodbc: missing database and refused logins are permanent (with a hint naming the setting), refused or
dropped connections are transient.
"""
from __future__ import annotations

import re
from typing import Iterable

from workers.runtime.errors import ConfigurationError, DrError, PermanentError, TransientError

_CONNECTION = "APPSVC_DR_DATABASE__SERVER / APPSVC_DR_DATABASE__PORT"

# (pattern, transient?, hint) - the first match wins, so specific permanent causes come first.
RULES: list[tuple[re.Pattern[str], bool, str]] = [
    (re.compile(r'database "[^"]*" does not exist'), False,
     "The database does not exist on the server: fix the name in APPSVC_DR_DATABASE__DATABASES (names are "
     "case-sensitive) or create the database; check APPSVC_DR_DATABASE__SERVER points at the right server."),
    (re.compile(r"password authentication failed|authentication failed|role \"[^\"]*\" does not exist|"
                r"no pg_hba\.conf entry|password is required|no password supplied", re.I), False,
     "PostgreSQL refused the login: check APPSVC_DR_DATABASE__USERNAME / APPSVC_DR_DATABASE__PASSWORD and "
     "that pg_hba.conf allows this host and user."),
    (re.compile(r"permission denied|must be owner|must be superuser", re.I), False,
     "The backup user lacks rights: grant it pg_read_all_data (backup) or make it the database owner / give "
     "it CREATEDB (restore), then replay the job."),
    (re.compile(r"server version mismatch|unsupported version|input file appears to be a text format", re.I),
     False, "pg_dump / pg_restore is older than the server or the archive: install the matching "
            "postgresql-client and point APPSVC_DR_DATABASE__PG_DUMP / PG_RESTORE at it."),
    (re.compile(r"No space left on device|disk full|could not extend file", re.I), False,
     "A disk is full (staging area or the restore target): free space, then replay the job."),
    (re.compile(r"SSL was required|does not support SSL|root certificate file .* does not exist|certificate verify "
                r"failed|does not match host name|server certificate for .* does not match|SSL error: (?!SYSCALL)",
                re.I), False,
     "TLS to PostgreSQL failed. A server over the network is checked with sslmode verify-full by default: enable "
     "SSL on it, give its CA certificate in APPSVC_DR_DATABASE__PG_SSLROOTCERT and use the host name its "
     "certificate names in APPSVC_DR_DATABASE__SERVER; only if you accept the risk, set "
     "APPSVC_DR_DATABASE__PG_SSLMODE (e.g. require: encrypted, not authenticated)."),
    (re.compile(r"connection refused|could not connect|timeout expired|timed out|server closed the connection|"
                r"terminating connection|connection to server .* failed|could not receive data|could not send data|"
                r"SSL SYSCALL|the database system is (starting up|shutting down|in recovery mode)|"
                r"could not translate host name|no connection to the server|connection .* lost|"
                r"canceling statement due to conflict with recovery|Connection reset by peer", re.I), True,
     f"The connection to PostgreSQL failed or dropped; the job is retried. If it persists, check "
     f"{_CONNECTION} and that the server is up."),
]


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def classify(text: str, *, action: str, secrets: Iterable[str] = (), default_transient: bool = False) -> DrError:
    """Map libpq / tool output to our errors. ``secrets`` are masked out of the message (defence in depth)."""
    detail = scrub(" ".join(text.split()), secrets)[-2000:] or "no error output"
    message = f"{action} failed: {detail}"
    for pattern, transient, hint in RULES:
        if pattern.search(text):
            return TransientError(message, hint=hint) if transient else PermanentError(message, hint=hint)
    if default_transient:
        return TransientError(message)
    return PermanentError(message, hint="Read the error above (from PostgreSQL or pg_dump / pg_restore), fix the "
                                        "cause, then `appsvc-dr dlq replay db-backup`.")


def missing_tool(tool: str, setting: str) -> ConfigurationError:
    return ConfigurationError(f"{tool} cannot be started",
                              hint=f"Install postgresql-client (matching the server's major version) or set "
                                   f"{setting} to the full path of {tool}.")
