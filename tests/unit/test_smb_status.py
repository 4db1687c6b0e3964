"""The one NTSTATUS classification (workers/smb/status.py), pinned status by status, and what the storage backend
and the file-share tree make of each kind."""
from __future__ import annotations

import errno

import pytest
from smbprotocol.exceptions import SMBAuthenticationError, SMBException, SMBOSError

from workers.fileshare.smbtree import SmbTree
from workers.fileshare.tree import FileProblem, SourceDenied, SourceMisconfigured, SourceUnavailable
from workers.runtime.errors import PermanentError, TransientError, is_permanent
from workers.smb.status import STATUSES, Kind, SettingNames, classify
from workers.storage.base import (InvalidArgument, StorageFull, StorageMisconfigured, StoragePermissionDenied,
                                  StorageUnavailable)
from workers.storage.smb import SmbStore

NAMES = SettingNames("X_PATH", "X_USERNAME", "X_PASSWORD", "X_PORT", "X_ENCRYPT")

# Every listed status: (code, name in MS-ERREF, kind, transient?)
TABLE = [
    (0xC000006D, "STATUS_LOGON_FAILURE", Kind.CREDENTIALS, False),
    (0xC000006A, "STATUS_WRONG_PASSWORD", Kind.CREDENTIALS, False),
    (0xC0000071, "STATUS_PASSWORD_EXPIRED", Kind.CREDENTIALS, False),
    (0xC0000072, "STATUS_ACCOUNT_DISABLED", Kind.CREDENTIALS, False),
    (0xC000006E, "STATUS_ACCOUNT_RESTRICTION", Kind.CREDENTIALS, False),
    (0xC0000234, "STATUS_ACCOUNT_LOCKED_OUT", Kind.CREDENTIALS, False),
    (0xC0000193, "STATUS_ACCOUNT_EXPIRED", Kind.CREDENTIALS, False),
    (0xC0000224, "STATUS_PASSWORD_MUST_CHANGE", Kind.CREDENTIALS, False),
    (0xC0000022, "STATUS_ACCESS_DENIED", Kind.DENIED, False),
    (0xC0000061, "STATUS_PRIVILEGE_NOT_HELD", Kind.DENIED, False),
    (0xC00000A2, "STATUS_MEDIA_WRITE_PROTECTED", Kind.DENIED, False),
    (0xC00000CC, "STATUS_BAD_NETWORK_NAME", Kind.NO_SHARE, False),
    (0xC0000225, "STATUS_NOT_FOUND", Kind.NO_SHARE, False),
    (0xC00000BE, "STATUS_BAD_NETWORK_PATH", Kind.NO_SHARE, False),
    (0xC000007F, "STATUS_DISK_FULL", Kind.FULL, False),
    (0xC0000044, "STATUS_QUOTA_EXCEEDED", Kind.FULL, False),
    (0xC0000043, "STATUS_SHARING_VIOLATION", Kind.LOCKED, True),
    (0xC0000054, "STATUS_FILE_LOCK_CONFLICT", Kind.LOCKED, True),
    (0xC0000055, "STATUS_LOCK_NOT_GRANTED", Kind.LOCKED, True),
    (0xC0000034, "STATUS_OBJECT_NAME_NOT_FOUND", Kind.MISSING, False),
    (0xC000003A, "STATUS_OBJECT_PATH_NOT_FOUND", Kind.MISSING, False),
    (0xC000000F, "STATUS_NO_SUCH_FILE", Kind.MISSING, False),
    (0xC0000056, "STATUS_DELETE_PENDING", Kind.MISSING, False),
    (0xC00000BA, "STATUS_FILE_IS_A_DIRECTORY", Kind.WRONG_TYPE, False),
    (0xC0000103, "STATUS_NOT_A_DIRECTORY", Kind.WRONG_TYPE, False),
    (0xC0000035, "STATUS_OBJECT_NAME_COLLISION", Kind.NAME_CONFLICT, False),
    (0xC0000033, "STATUS_OBJECT_NAME_INVALID", Kind.NAME_CONFLICT, False),
]
# What the storage backend raises for each kind (a write: not-found statuses are a key collision there)
STORE = {Kind.CREDENTIALS: StoragePermissionDenied, Kind.DENIED: StoragePermissionDenied,
         Kind.NO_SHARE: StorageMisconfigured, Kind.FULL: StorageFull, Kind.LOCKED: StorageUnavailable,
         Kind.MISSING: InvalidArgument, Kind.WRONG_TYPE: InvalidArgument, Kind.NAME_CONFLICT: InvalidArgument}
# What the file-share tree raises for each kind, about one file ("a/b") and about its root ("")
TREE_FILE = {Kind.CREDENTIALS: SourceDenied, Kind.DENIED: "denied", Kind.NO_SHARE: SourceMisconfigured,
             Kind.FULL: PermanentError, Kind.LOCKED: "locked", Kind.MISSING: "vanished", Kind.WRONG_TYPE: "vanished",
             Kind.NAME_CONFLICT: "denied"}
TREE_ROOT = {**TREE_FILE, Kind.DENIED: SourceDenied, Kind.MISSING: SourceMisconfigured,
             Kind.WRONG_TYPE: SourceMisconfigured, Kind.NAME_CONFLICT: SourceMisconfigured}


def test_the_table_lists_every_classified_status_once() -> None:
    # Given the pinned table / Then it is exactly the module's table: no status added or changed unnoticed
    assert {code: (name, kind) for code, name, kind, _ in TABLE} == STATUSES
    assert len(TABLE) == len(STATUSES)


@pytest.mark.parametrize("code,name,kind,transient", TABLE, ids=[row[1] for row in TABLE])
def test_each_status_is_classified_once_for_every_caller(code: int, name: str, kind: Kind, transient: bool) -> None:
    # Given smbclient's error for the status (what every smbclient call raises)
    exc = SMBOSError(code, r"\\host\share\a\b")
    # When classified
    failure = classify(exc, "smb://host/share", host="host", share="share", port=445, settings=NAMES)
    # Then its kind, transience and (permanent ones) a how-to-fix hint
    assert failure is not None and failure.kind is kind and failure.transient is transient
    assert failure.status == code and f"0x{code:08x}" in failure.detail
    assert failure.hint.strip()
    # And the storage backend raises the matching error: transient exactly when the table says so
    store = SmbStore(r"\\host\share\dir", "user", "pw", port=1445)
    stored = store._translate(exc, "write", "k")
    assert type(stored) is STORE[kind] and isinstance(stored, TransientError) is transient
    assert is_permanent(stored) is not transient and stored.hint
    # And the file-share tree raises the matching error for one file and for its root
    tree = SmbTree(r"\\host\share\dir", username="user", password="pw", port=1445)
    for rel, expected in (("a/b", TREE_FILE[kind]), ("", TREE_ROOT[kind])):
        got = tree.classify(exc, rel)
        if isinstance(expected, str):
            assert isinstance(got, FileProblem) and got.kind == expected
        else:
            assert type(got) is expected and is_permanent(got) and got.hint


def test_logon_refused_by_the_protocol_is_credentials() -> None:
    # Given smbprotocol's authentication error (no NTSTATUS) / When classified / Then CREDENTIALS, naming the settings
    failure = classify(SMBAuthenticationError("Failed to authenticate"), "w", host="h", share="s", port=445,
                       settings=NAMES)
    assert failure is not None and failure.kind is Kind.CREDENTIALS and not failure.transient
    assert "X_USERNAME" in failure.hint and "X_PASSWORD" in failure.hint


def test_missing_encryption_is_permanent_and_names_the_setting() -> None:
    exc = SMBException("SMB encryption is required but the connection does not support it")
    failure = classify(exc, "w", host="h", share="s", port=445, settings=NAMES)
    assert failure is not None and failure.kind is Kind.NO_ENCRYPTION and not failure.transient
    assert "X_ENCRYPT=false" in failure.hint


@pytest.mark.parametrize("exc", [SMBOSError(0xC00000B5, "p"),                  # STATUS_IO_TIMEOUT: not listed
                                 ConnectionResetError(errno.ECONNRESET, "reset"), EOFError(),
                                 ValueError("Failed to connect to 'h:445': timed out"), SMBException("dropped")],
                         ids=["unlisted-status", "reset", "eof", "connect", "smb-exception"])
def test_any_other_smb_or_connection_failure_is_transient(exc: BaseException) -> None:
    failure = classify(exc, "w", host="h", share="s", port=1445, settings=NAMES)
    assert failure is not None and failure.kind is Kind.UNREACHABLE and failure.transient
    assert "h:1445" in failure.hint and "X_PORT" in failure.hint
    assert isinstance(SmbTree(r"\\h\s", port=1445).classify(exc, "a"), SourceUnavailable)


def test_a_bug_is_not_classified() -> None:
    # Given an error that is no SMB or connection failure / Then no classification: it propagates as the bug it is
    assert classify(KeyError("x"), "w", host="h", share="s", port=445, settings=NAMES) is None
    assert classify(ValueError("bad value"), "w", host="h", share="s", port=445, settings=NAMES) is None
