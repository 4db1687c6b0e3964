"""The one NTSTATUS classification of the house: every SMB failure is transient (retry with backoff) or
permanent, and each permanent one carries a how-to-fix hint naming the caller's settings.

A status is classified by what fixes it (names and codes from [MS-ERREF] 2.3.1):

* CREDENTIALS - the logon itself was refused. Retrying cannot fix it and could lock the account out: permanent.
* DENIED - the account is known but lacks a right on this object, or the medium is write-protected: permanent
  (someone must grant the right; PRIVILEGE_NOT_HELD is a missing right too, not a glitch).
* NO_SHARE - the share (or the DFS path to it) does not exist: the configured path is wrong, permanent.
* FULL - disk full or quota exceeded: it does not clear within a retry's backoff, someone must free space.
* LOCKED - another open holds the file (sharing violation, byte-range lock): it goes away when that program
  closes the file, so transient (a file-share reader records the file as locked and retries it later).
* MISSING - the name or path is not there (or is being deleted): permanent; the caller decides what a missing
  object means (not found, vanished, a vanished store directory).
* WRONG_TYPE - a directory where a file is expected or the reverse: for a reader the object is not there
  (like MISSING); for a writer the key collides with what is there.
* NAME_CONFLICT - the name exists (create-new, rename without replace) or the server refuses it as a name:
  the same request fails the same way every time, permanent.
* NO_ENCRYPTION - the server cannot encrypt (no SMB 3) while encryption is required: configuration, permanent.
* UNREACHABLE - any other SMB, socket or connection failure (reset, timeout, session expired, server busy):
  transient, retried with backoff; the hint says what to check if it persists.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from smbprotocol.exceptions import SMBAuthenticationError, SMBException, SMBResponseException


class Kind(enum.Enum):
    CREDENTIALS = "credentials"
    DENIED = "denied"
    NO_SHARE = "no-share"
    FULL = "full"
    LOCKED = "locked"
    MISSING = "missing"
    WRONG_TYPE = "wrong-type"
    NAME_CONFLICT = "name-conflict"
    NO_ENCRYPTION = "no-encryption"
    UNREACHABLE = "unreachable"


TRANSIENT = frozenset({Kind.LOCKED, Kind.UNREACHABLE})

# NTSTATUS code -> (name in MS-ERREF, kind). A status not listed here is UNREACHABLE (transient).
STATUSES: dict[int, tuple[str, Kind]] = {
    0xC000006D: ("STATUS_LOGON_FAILURE", Kind.CREDENTIALS),
    0xC000006A: ("STATUS_WRONG_PASSWORD", Kind.CREDENTIALS),
    0xC0000071: ("STATUS_PASSWORD_EXPIRED", Kind.CREDENTIALS),
    0xC0000072: ("STATUS_ACCOUNT_DISABLED", Kind.CREDENTIALS),
    0xC000006E: ("STATUS_ACCOUNT_RESTRICTION", Kind.CREDENTIALS),
    0xC0000234: ("STATUS_ACCOUNT_LOCKED_OUT", Kind.CREDENTIALS),
    0xC0000193: ("STATUS_ACCOUNT_EXPIRED", Kind.CREDENTIALS),
    0xC0000224: ("STATUS_PASSWORD_MUST_CHANGE", Kind.CREDENTIALS),
    0xC0000022: ("STATUS_ACCESS_DENIED", Kind.DENIED),
    0xC0000061: ("STATUS_PRIVILEGE_NOT_HELD", Kind.DENIED),
    0xC00000A2: ("STATUS_MEDIA_WRITE_PROTECTED", Kind.DENIED),
    0xC00000CC: ("STATUS_BAD_NETWORK_NAME", Kind.NO_SHARE),
    0xC0000225: ("STATUS_NOT_FOUND", Kind.NO_SHARE),
    0xC00000BE: ("STATUS_BAD_NETWORK_PATH", Kind.NO_SHARE),
    0xC000007F: ("STATUS_DISK_FULL", Kind.FULL),
    0xC0000044: ("STATUS_QUOTA_EXCEEDED", Kind.FULL),
    0xC0000043: ("STATUS_SHARING_VIOLATION", Kind.LOCKED),
    0xC0000054: ("STATUS_FILE_LOCK_CONFLICT", Kind.LOCKED),
    0xC0000055: ("STATUS_LOCK_NOT_GRANTED", Kind.LOCKED),
    0xC0000034: ("STATUS_OBJECT_NAME_NOT_FOUND", Kind.MISSING),
    0xC000003A: ("STATUS_OBJECT_PATH_NOT_FOUND", Kind.MISSING),
    0xC000000F: ("STATUS_NO_SUCH_FILE", Kind.MISSING),
    0xC0000056: ("STATUS_DELETE_PENDING", Kind.MISSING),
    0xC00000BA: ("STATUS_FILE_IS_A_DIRECTORY", Kind.WRONG_TYPE),
    0xC0000103: ("STATUS_NOT_A_DIRECTORY", Kind.WRONG_TYPE),
    0xC0000035: ("STATUS_OBJECT_NAME_COLLISION", Kind.NAME_CONFLICT),
    0xC0000033: ("STATUS_OBJECT_NAME_INVALID", Kind.NAME_CONFLICT),
}


@dataclass(frozen=True)
class SettingNames:
    """The settings an operator changes to fix an SMB failure of one caller (named in hints)."""

    path: str
    username: str
    password: str
    port: str
    encrypt: str


@dataclass(frozen=True)
class Failure:
    """One classified SMB failure: what kind, whether a retry may fix it, and how to fix it (permanent ones)."""

    kind: Kind
    status: int | None
    detail: str           # "<where>: <exception type> (NTSTATUS 0x...)" - never credentials
    hint: str

    @property
    def transient(self) -> bool:
        return self.kind in TRANSIENT


def ntstatus(exc: BaseException) -> int | None:
    """The NTSTATUS an smbprotocol/smbclient error carries, if any."""
    status = getattr(exc, "ntstatus", None)
    if status is None and isinstance(exc, SMBResponseException):
        status = exc.status
    return status or None


def kind_of(exc: BaseException) -> Kind | None:
    """The kind of ``exc``, or None when it is not an SMB/connection failure (a bug: let it propagate)."""
    status = ntstatus(exc)
    if isinstance(exc, SMBAuthenticationError):
        return Kind.CREDENTIALS
    if status in STATUSES:
        return STATUSES[status][1]
    if isinstance(exc, SMBException) and "encryption is required" in str(exc):
        return Kind.NO_ENCRYPTION
    if isinstance(exc, (SMBException, OSError, EOFError)) or (
            isinstance(exc, ValueError) and "Failed to connect" in str(exc)):
        return Kind.UNREACHABLE
    return None


def classify(exc: BaseException, where: str, *, host: str, share: str, port: int,
             settings: SettingNames) -> Failure | None:
    """Classify ``exc`` raised while working on ``where`` (a display name, never credentials)."""
    kind = kind_of(exc)
    if kind is None:
        return None
    status = ntstatus(exc)
    detail = f"{where}: {type(exc).__name__}" + (f" (NTSTATUS 0x{status:08x})" if status else f": {exc}")
    return Failure(kind, status, detail, _hint(kind, host, share, port, settings))


def _hint(kind: Kind, host: str, share: str, port: int, s: SettingNames) -> str:
    if kind is Kind.CREDENTIALS:
        return (f"The server rejected the login: check {s.username} and {s.password} for {host} (user name as "
                "DOMAIN\\user or user@domain; an expired, disabled or locked-out account ends up here too).")
    if kind is Kind.DENIED:
        return (f"The account in {s.username} lacks the rights needed here: grant it access (read to read, "
                f"change/modify to write) on share {share!r} and the folder in {s.path}.")
    if kind is Kind.NO_SHARE:
        return f"Share {share!r} does not exist on {host}: fix {s.path}."
    if kind is Kind.FULL:
        return (f"Share {share!r} is full or over quota: free space or grow it, then run it again "
                "(`appsvc-dr dlq replay <worker>` for a dead-lettered job).")
    if kind is Kind.LOCKED:
        return "Another program holds the file open; it is retried. If it persists, close that program."
    if kind in (Kind.MISSING, Kind.WRONG_TYPE):
        return f"The path does not exist on share {share!r} (or is a file where a directory goes, or the " \
               f"reverse): check {s.path}."
    if kind is Kind.NAME_CONFLICT:
        return "The name collides with an existing file or directory, or the server refuses it as a name."
    if kind is Kind.NO_ENCRYPTION:
        return (f"The server cannot encrypt SMB traffic (SMB 3 needed): upgrade/enable it, or set "
                f"{s.encrypt}=false on a trusted network.")
    return (f"Check that {host}:{port} ({s.path}, {s.port}) is up and reachable; the job is retried with "
            "backoff.")
