"""Backup media on the simulated disks: one file per media family (stripe), each with its header.

A file is a magic line, a JSON header line and the family's share of the payload. The header carries what
RESTORE HEADERONLY / FILELISTONLY report (database name, LSNs, server version, checksum flag, compression,
copy-only, the media set id and family count/sequence) and the payload's length and SHA-256, so a truncated or
altered file is "incorrectly formed" (3241) and a media set with a family missing is 3132.
Column names follow RESTORE HEADERONLY / RESTORE FILELISTONLY:
https://learn.microsoft.com/en-us/sql/t-sql/statements/restore-statements-headeronly-transact-sql
https://learn.microsoft.com/en-us/sql/t-sql/statements/restore-statements-filelistonly-transact-sql
"""
from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.sqlsim.errors import SqlError, fail
from tests.sqlsim.state import Database, DbFile

MAGIC = b"SQLSIM-MTF 1\n"


@dataclass(frozen=True)
class Header:
    database_name: str
    first_lsn: int
    last_lsn: int
    database_backup_lsn: int
    software_version: str
    has_checksums: bool
    compressed: bool
    copy_only: bool
    recovery_model: str
    containment: str
    media_set_id: str
    family_count: int
    family_sequence: int
    files: list[dict[str, Any]]
    rows: dict[str, int]
    payload_size: int
    payload_sha256: str
    backup_type: int = 1                # 1 database, 2 transaction log
    server_name: str = ""               # the instance that took the backup (HEADERONLY ServerName)


    def headeronly_row(self) -> dict[str, Any]:
        major, minor, build = (int(p) for p in self.software_version.split(".")[:3])
        return {"BackupType": self.backup_type, "DatabaseName": self.database_name, "FirstLSN": self.first_lsn,
                "LastLSN": self.last_lsn, "DatabaseBackupLSN": self.database_backup_lsn,
                "SoftwareVersionMajor": major, "SoftwareVersionMinor": minor, "SoftwareVersionBuild": build,
                "HasBackupChecksums": int(self.has_checksums), "Compressed": int(self.compressed),
                "IsCopyOnly": int(self.copy_only), "RecoveryModel": self.recovery_model,
                "Containment": 1 if self.containment == "PARTIAL" else 0,
                "FamilyCount": self.family_count, "FamilySequenceNumber": self.family_sequence,
                "ServerName": self.server_name}

    def filelist_rows(self) -> list[dict[str, Any]]:
        return [{"LogicalName": f["logical"], "PhysicalName": f["physical"], "Type": f["kind"],
                 "FileGroupName": f["filegroup"], "FileID": f["file_id"], "Size": 8388608} for f in self.files]


def payload_of(database: Database) -> bytes:
    """The bytes a backup carries: enough to prove the restore copied the database, and its corruption."""
    body = json.dumps({"rows": database.rows, "corrupt_pages": database.corrupt_pages}, sort_keys=True).encode()
    return body + b"\0" * 4096


def write_media(paths: list[Path], devices: list[str], database: Database, *, version: str, checksum: bool,
                compressed: bool, copy_only: bool, lsns: tuple[int, int, int], backup_type: int = 1,
                server_name: str = "") -> None:
    payload = payload_of(database)
    media_set = str(uuid.uuid4())
    size = -(-len(payload) // len(paths))
    for sequence, (path, device) in enumerate(zip(paths, devices), start=1):
        part = payload[(sequence - 1) * size:sequence * size]
        header = Header(database.name, lsns[0], lsns[1], lsns[2], version, checksum, compressed, copy_only,
                        database.recovery_model, database.containment, media_set, len(paths), sequence,
                        [asdict(f) for f in database.files], dict(database.rows), len(part),
                        hashlib.sha256(part).hexdigest(), backup_type, server_name)
        with open(path, "wb") as fh:
            fh.write(MAGIC + json.dumps(asdict(header)).encode() + b"\n" + part)


def read_family(path: Path, device: str, terminating: str) -> tuple[Header, bytes]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise fail(3201, device, "2(The system cannot find the file specified.)", terminating=terminating)
    except IsADirectoryError:
        raise fail(3201, device, "5(Access is denied.)", terminating=terminating)
    bad = fail(3241, device, terminating=terminating)
    if not raw.startswith(MAGIC) or b"\n" not in raw[len(MAGIC):]:
        raise bad
    line, part = raw[len(MAGIC):].split(b"\n", 1)
    try:
        fields = json.loads(line)
        header = Header(**fields)
    except (ValueError, TypeError):
        raise bad from None
    if len(part) != header.payload_size or hashlib.sha256(part).hexdigest() != header.payload_sha256:
        raise bad
    return header, part


def read_media(paths: list[Path], devices: list[str], terminating: str) -> tuple[Header, bytes]:
    """Every family of one media set, in order; the first family's header describes the set."""
    families = [read_family(p, d, terminating) for p, d in zip(paths, devices)]
    first = families[0][0]
    if len({h.media_set_id for h, _ in families}) != 1:
        raise fail(3241, devices[-1], terminating=terminating)
    if len(families) != first.family_count:
        raise SqlError(*fail(3132, first.family_count, len(families), terminating=terminating).records)
    ordered = sorted(families, key=lambda f: f[0].family_sequence)
    return first, b"".join(part for _, part in ordered)


def restored_content(payload: bytes) -> dict[str, Any]:
    return json.loads(payload.rstrip(b"\0"))


def files_from(header: Header) -> list[DbFile]:
    return [DbFile(f["logical"], f["physical"], f["kind"], f["file_id"], f["filegroup"]) for f in header.files]
