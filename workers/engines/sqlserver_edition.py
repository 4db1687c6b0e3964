"""What the instance can do with a backup: its edition and version decide COMPRESSION and MAXTRANSFERSIZE.

* ``SERVERPROPERTY('EngineEdition')``: 2 Standard (also Web and Business Intelligence), 3 Enterprise (also
  Developer and Evaluation), 4 Express; ``SERVERPROPERTY('Edition')`` tells Web from Standard.
  https://learn.microsoft.com/en-us/sql/t-sql/functions/serverproperty-transact-sql
* Backup compression: Enterprise, Standard and Developer (since 2008 R2); not Express or Web, where BACKUP ...
  WITH COMPRESSION fails with 1844 ("Editions and supported features of SQL Server 2022", RAS section). There
  the engine leaves COMPRESSION out and says so at INFO: the setting's default must not break Express (the
  App Service prerequisites allow it for ASDK).
* TDE: SQL Server 2016 and 2017 (and 2019 before CU5, 15.0.4043) compress an encrypted database's pages
  (decrypt, compress, encrypt) only when MAXTRANSFERSIZE > 65536; otherwise the encrypted pages barely shrink.
  2019 CU5 and later raise it to 128 KB themselves. BACKUP, "MAXTRANSFERSIZE":
  https://learn.microsoft.com/en-us/sql/t-sql/statements/backup-transact-sql
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from workers.engines.sqlserver_sql import BackupOptions

SERVER_FACTS = ("SELECT SERVERPROPERTY('EngineEdition') AS engine_edition, SERVERPROPERTY('Edition') AS edition, "
                "SERVERPROPERTY('ProductVersion') AS product_version")
DATABASE_ENCRYPTED = "SELECT is_encrypted FROM sys.databases WHERE name = ?"

EXPRESS = 4
TDE_TRANSFER_SIZE = 131072          # 128 KB: what 2019 CU5+ picks itself
_TDE_FIXED_IN = (15, 0, 4043)       # SQL Server 2019 CU5


@dataclass(frozen=True)
class ServerFacts:
    engine_edition: int
    edition: str
    version: tuple[int, ...]

    @classmethod
    def from_row(cls, row: dict[str, Any] | None) -> "ServerFacts":
        row = row or {}
        version = tuple(int(p) for p in str(row.get("product_version") or "0").split(".") if p.isdigit())
        return cls(int(row.get("engine_edition") or 0), str(row.get("edition") or ""), version or (0,))

    @property
    def compresses_backups(self) -> bool:
        return self.engine_edition != EXPRESS and not self.edition.lower().startswith("web")

    @property
    def tde_needs_transfer_size(self) -> bool:
        return self.version[0] in (13, 14) or self.version[0] == 15 and self.version < _TDE_FIXED_IN


def fit_options(options: BackupOptions, facts: ServerFacts, encrypted: bool) -> tuple[BackupOptions, list[str]]:
    """``options`` adjusted to what this server supports, and one note per change (logged at INFO)."""
    notes = []
    if options.compression and not facts.compresses_backups:
        options = dataclasses.replace(options, compression=False)
        notes.append(f"{facts.edition or 'this edition'} cannot compress backups: backing up without COMPRESSION "
                     "(APPSVC_DR_DATABASE__COMPRESSION=false silences this)")
    small = options.max_transfer_size is None or options.max_transfer_size <= 65536
    if options.compression and encrypted and facts.tde_needs_transfer_size and small:
        options = dataclasses.replace(options, max_transfer_size=TDE_TRANSFER_SIZE)
        notes.append(f"TDE database on SQL Server {'.'.join(map(str, facts.version))}: MAXTRANSFERSIZE = "
                     f"{TDE_TRANSFER_SIZE} so the encrypted pages are really compressed")
    return options, notes
