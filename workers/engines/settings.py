"""``DatabaseSettings``: which engine backs up which databases, and how (``APPSVC_DR_DATABASE__<FIELD>``).

One model for both engines; fields that only one engine reads say so in their description. Secrets are
``SecretStr`` so they print as ``**********``.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator

from contracts.envelope import DATABASE_PATTERN

SQLSERVER_DRIVER = "ODBC Driver 18 for SQL Server"
POSTGRES_DRIVER = "PostgreSQL Unicode"
DEFAULT_PORTS = {"sqlserver": 1433, "postgres": 5432}


class DatabaseSettings(BaseModel, extra="forbid"):
    engine: Literal["sqlserver", "postgres"] = "sqlserver"
    databases: list[str] = Field(default=["appservice_hosting", "appservice_metering"], min_length=1,
                                 description="Databases to back up, one job each")
    server: str = Field(default="127.0.0.1", min_length=1,
                        description="Host name or IP; SQL Server also accepts host\\instance")
    port: int | None = Field(default=None, ge=1, le=65535, description="Default: 1433 / 5432 by engine")
    username: str | None = None
    password: SecretStr | None = None
    auth: Literal["sql", "kerberos", "entra-password", "entra-msi"] = Field(
        default="sql", description="SQL Server: how to log in (sql = UID/PWD; kerberos = integrated)")
    driver: str | None = Field(default=None, description="ODBC driver name; default by engine "
                               f"('{SQLSERVER_DRIVER}' or 'FreeTDS' / '{POSTGRES_DRIVER}')")
    encrypt: Literal["yes", "no", "strict"] = Field(default="yes", description="SQL Server: TDS encryption")
    trust_server_certificate: bool = Field(default=False, description="SQL Server: skip certificate validation")
    timeout: int = Field(default=30, ge=1, description="Seconds to wait for a connection (login timeout)")
    query_timeout: int = Field(default=0, ge=0, description="Seconds a statement may run; 0 = no limit "
                                                             "(backups of big databases take hours)")
    # ---- SQL Server BACKUP / RESTORE options
    compression: bool = True
    copy_only: bool = Field(default=True, description="COPY_ONLY: does not disturb the DBA's backup chain")
    verify: bool = Field(default=True, description="RESTORE VERIFYONLY / pg_restore check after each backup")
    stats_percent: int = Field(default=10, ge=1, le=100, description="STATS = N: progress every N percent")
    max_transfer_size: int | None = Field(default=None, description="MAXTRANSFERSIZE for DISK backups: a "
                                          "multiple of 65536 up to 4194304")
    buffer_count: int | None = Field(default=None, ge=1, le=10000, description="BUFFERCOUNT")
    stripes: int = Field(default=1, ge=1, le=64, description="Write the backup to N files "
                         "(name.stripe1ofN.bak, ...), stored as N artifacts <db>.bak.1ofN ... <db>.bak.NofN")
    ag_override: bool = Field(default=False, description="Back up Always On databases on the replica "
                              "connected to (through a listener: the primary) instead of the AG's preferred "
                              "backup replica")
    ag_replica_servers: dict[str, str] = Field(default_factory=dict, description="Always On: replica_server_name "
                                               "-> host, host\\instance or host,port to connect to (default: the "
                                               "host of the replica's endpoint URL and the configured port)")
    multi_subnet_failover: bool = Field(default=False, description="SQL Server: SERVER is an AG listener (or "
                                        "FCI): connect with MultiSubnetFailover=Yes")
    verify_fallback: Literal["checksum", "fail"] = Field(default="checksum", description="When the login "
                                                         "lacks CREATE DATABASE, which RESTORE VERIFYONLY needs: "
                                                         "checksum = rely on BACKUP ... WITH CHECKSUM and warn; "
                                                         "fail = fail the backup with the GRANT to run")
    log_backup_max_age_minutes: int = Field(default=1440, ge=0, description="SQL Server: warn (job-failed "
                                            "warning + metric) when a FULL-recovery database has no log backup "
                                            "newer than this in msdb, or its log waits for one "
                                            "(log_reuse_wait_desc = LOG_BACKUP); 0 = never warn")
    restore_data_path: str | None = Field(default=None, description="Drills only: directory for the scratch "
                                          "databases' data files (RESTORE ... MOVE); unset = the instance's "
                                          "default data directory. Restores take --data-path")
    restore_log_path: str | None = Field(default=None, description="Drills only: directory for the scratch "
                                         "log files; unset = restore_data_path, else the instance default")
    # ---- PostgreSQL
    pg_dump: str = Field(default="pg_dump", min_length=1, description="pg_dump executable")
    pg_restore: str = Field(default="pg_restore", min_length=1, description="pg_restore executable")
    pg_maintenance_db: str = Field(default="postgres", min_length=1,
                                   description="Database to connect to for CREATE DATABASE")
    pg_sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = Field(
        default=None, description="libpq sslmode. Default: verify-full (encrypted, certificate and host name "
        "checked) for a server over the network; prefer for localhost / 127.0.0.0/8 / ::1 / a socket directory")
    pg_sslrootcert: str | None = Field(default=None, description="CA certificate file(s) verify-ca / verify-full "
                                       "check the server against (libpq sslrootcert); unset: "
                                       "~/.postgresql/root.crt")
    pg_compress: int | None = Field(default=0, ge=0, le=9, description="pg_dump -Z level. 0 by default: the "
                                    "upload worker compresses with zstd anyway, and pg_dump's single-core zlib "
                                    "made the whole backup 1.8x slower (None = pg_dump's own default)")
    pg_amcheck: bool = Field(default=True, description="Drills: check the restored database with amcheck "
                             "(bt_index_check, verify_heapam) where the server has it; false: read every table "
                             "in full instead")
    restore_while_fetching: bool = Field(default=True, description="PostgreSQL: restore a database that does not "
                                         "exist yet while its backup downloads, into a scratch database renamed "
                                         "to it once every hash checked out; false: download and verify first")
    pg_verify_data: bool = Field(default=True, description="Verify by reading the whole archive "
                                 "(pg_restore -f /dev/null) after pg_restore --list")

    @field_validator("databases")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(DATABASE_PATTERN, name):
                raise ValueError(f"database name {name[:130]!r} cannot be backed up: a name is 1-123 letters, digits, "
                                 "'.', '_' or '-', starting with a letter or digit (it names the backup's object)")
        if len(set(value)) != len(value):
            raise ValueError("database names must be unique")
        return value

    @field_validator("ag_replica_servers")
    @classmethod
    def _replica_addresses(cls, value: dict[str, str]) -> dict[str, str]:
        for name, address in value.items():
            host, _, port = address.partition(",")
            bad = [c for c in name + address if ord(c) < 32 or c in ";{}="]
            if not name.strip() or not host.strip() or bad or port and not (port.isdigit() and 0 < int(port) < 65536):
                raise ValueError(f"ag_replica_servers: {name!r} -> {address!r} is not replica name -> host, "
                                 "host\\instance or host,port")
        return value

    @field_validator("max_transfer_size")
    @classmethod
    def _transfer(cls, value: int | None) -> int | None:
        if value is not None and (value % 65536 or not 65536 <= value <= 4194304):
            raise ValueError("MAXTRANSFERSIZE must be a multiple of 65536 between 65536 and 4194304")
        return value

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.engine]

    @property
    def effective_pg_sslmode(self) -> str:
        """``pg_sslmode`` if set, else verify-full for a network server and prefer for a local one."""
        return self.pg_sslmode or ("prefer" if is_local_host(self.server) else "verify-full")

    @property
    def effective_driver(self) -> str:
        return self.driver or (SQLSERVER_DRIVER if self.engine == "sqlserver" else POSTGRES_DRIVER)


def is_local_host(server: str) -> bool:
    """localhost, a loopback address (127.0.0.0/8, ::1) or a Unix-socket directory (libpq: starts with /)."""
    host = server.strip().strip("[]")
    if host.startswith("/") or host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
