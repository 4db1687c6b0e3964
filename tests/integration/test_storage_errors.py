"""Storage failures are classified where they happen (transient vs permanent) and carry a hint with no secret."""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import secrets as random_secrets
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.fixtures import closed_port, started
from tests.fixtures.s3server import S3Server, moto_s3_server
from tests.fixtures.smbd import SmbServer, smbd_server
from workers.runtime.errors import is_permanent
from workers.storage import build_store
from workers.storage.base import (StorageError, StorageFull, StorageMisconfigured, StoragePermissionDenied,
                                  StorageUnavailable)
from workers.storage.local import LocalStore
from workers.storage.localfs import classify_os_error
from workers.storage.s3 import S3Store
from workers.storage.settings import StoreSettings
from workers.storage.smb import SmbStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with started("moto S3 server", moto_s3_server()) as server:
        yield server


@pytest.fixture(scope="module")
def smb() -> Iterator[SmbServer]:
    with started("Samba smbd", smbd_server()) as server:
        yield server


def caught(call: Callable[[], object], cls: type[StorageError], *, secrets: tuple[str, ...] = (),
           settings: tuple[str, ...] = ()) -> StorageError:
    """Run ``call``; assert it raised ``cls`` with a hint naming ``settings`` and no trace of ``secrets``."""
    with pytest.raises(cls) as info:
        call()
    err = info.value
    assert err.hint.strip(), "every storage error carries a how-to-fix hint"
    assert is_permanent(err) is not isinstance(err, StorageUnavailable)
    rendered = "".join(traceback.format_exception(err)) + err.hint + repr(err)
    for secret in secrets:
        assert secret not in rendered
    for setting in settings:
        assert setting in err.hint
    return err


def secret() -> str:
    """A fresh secret, made at run time so a traceback quoting test source cannot contain it."""
    return "Secret-" + random_secrets.token_hex(8)


def s3_store(server: S3Server, bucket: str = "errors", **kw: object) -> S3Store:
    options: dict = dict(access_key=server.access_key, secret_key=server.secret_key, region=server.region,
                         secure=False, part_size=5 * 1024 * 1024)
    options.update(kw)
    return S3Store(server.endpoint, bucket=bucket, **options)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ S3
def test_s3_server_stopped_is_transient() -> None:
    # Given a working S3 store holding an object
    with started("moto S3 server", moto_s3_server()) as server:
        store = s3_store(server, "stopped")
        store.put("k", io.BytesIO(b"x"))
        # When the server goes away
        server.stop()
        started_at = time.monotonic()
        # Then every operation fails as StorageUnavailable (retry later), naming the endpoint setting
        for call in (lambda: store.stat("k"), lambda: store.put("k2", io.BytesIO(b"y")), lambda: list(store.list())):
            caught(call, StorageUnavailable, secrets=(server.secret_key,), settings=("APPSVC_DR_STORE__S3_ENDPOINT",))
        assert time.monotonic() - started_at < 30


def test_s3_unreachable_endpoint_is_transient() -> None:
    # Given an endpoint where nothing listens / When used / Then StorageUnavailable
    key = secret()
    store = S3Store(f"127.0.0.1:{closed_port()}", "ak", key, "bucket", secure=False)
    caught(lambda: store.exists("k"), StorageUnavailable, secrets=(key,))


def test_s3_wrong_credentials_are_permanent_with_hint() -> None:
    # Given an S3 server that checks signatures, and a valid key pair on it
    with started("moto S3 server", moto_s3_server()) as server:
        access_key, secret_key = server.create_access_key()
        server.enforce_auth()
        good = s3_store(server, "authbucket", access_key=access_key, secret_key=secret_key)
        good.put("k", io.BytesIO(b"x"))
        known = {"size": 2, "sha256": hashlib.sha256(b"xy").hexdigest()}     # one streamed request, signed by us
        assert good.put("k2", io.BytesIO(b"xy"), **known).size == 2
        # When the secret is wrong, or the key id unknown
        wrong, other = secret(), secret()
        wrong_secret = s3_store(server, "authbucket", access_key=access_key, secret_key=wrong)
        unknown_key = s3_store(server, "authbucket", access_key="AKIAUNKNOWN", secret_key=other)
        # Then the error is permanent, says which settings to fix, and never shows a secret
        for store in (wrong_secret, unknown_key):
            for call in (lambda: store.stat("k"), lambda: store.put("k", io.BytesIO(b"y")),
                         lambda: store.put("k2", io.BytesIO(b"xy"), **known)):
                caught(call, StoragePermissionDenied,
                       secrets=(wrong, other, secret_key),
                       settings=("APPSVC_DR_STORE__S3_ACCESS_KEY", "APPSVC_DR_STORE__S3_SECRET_KEY"))
        assert good.stat("k").size == 1 and good.stat("k2").size == 2


def test_s3_missing_bucket_without_create_is_permanent(s3: S3Server) -> None:
    # Given a bucket that does not exist and create_bucket=False
    store = s3_store(s3, "does-not-exist", create_bucket=False)
    # When anything is stored or read / Then StorageMisconfigured naming the bucket settings; no bucket made
    for call in (lambda: store.put("k", io.BytesIO(b"x")), lambda: store.stat("k"), lambda: list(store.list())):
        caught(call, StorageMisconfigured, secrets=(s3.secret_key,),
               settings=("APPSVC_DR_STORE__S3_BUCKET", "APPSVC_DR_STORE__S3_CREATE_BUCKET"))
    assert s3_store(s3, "probe").exists("k") is False
    assert not s3_store(s3, "does-not-exist", create_bucket=False)._client.bucket_exists("does-not-exist")


def test_s3_https_against_an_http_server_is_misconfigured(s3: S3Server) -> None:
    # Given secure=True towards a plain-HTTP server / When used / Then permanent, pointing at S3_SECURE
    store = s3_store(s3, "tls", secure=True)
    caught(lambda: store.exists("k"), StorageMisconfigured, settings=("APPSVC_DR_STORE__S3_SECURE",))


# ----------------------------------------------------------------------------------------------- SMB
def test_smb_wrong_password_is_permanent_with_hint(smb: SmbServer) -> None:
    # Given the right user with a wrong password
    wrong = secret()
    store = SmbStore(smb.unc("dir"), smb.username, wrong, port=smb.port)
    # When used / Then StoragePermissionDenied naming the SMB credential settings, without any password
    for call in (lambda: store.put("k", io.BytesIO(b"x")), lambda: store.exists("k")):
        caught(call, StoragePermissionDenied, secrets=(wrong, smb.password),
               settings=("APPSVC_DR_STORE__SMB_USERNAME", "APPSVC_DR_STORE__SMB_PASSWORD"))


def test_smb_unreachable_server_is_transient(smb: SmbServer) -> None:
    # Given a port where no SMB server listens
    store = SmbStore(smb.unc("dir"), smb.username, smb.password, port=closed_port(), timeout=5)
    started_at = time.monotonic()
    # When used / Then StorageUnavailable naming the host/port settings, quickly
    caught(lambda: store.put("k", io.BytesIO(b"x")), StorageUnavailable, secrets=(smb.password,),
           settings=("APPSVC_DR_STORE__SMB_PORT",))
    assert time.monotonic() - started_at < 10


def test_smb_unknown_share_is_misconfigured(smb: SmbServer) -> None:
    # Given a share name the server does not have / When used / Then permanent, pointing at SMB_PATH
    store = SmbStore(smb.unc("dir", share="nosuchshare"), smb.username, smb.password, port=smb.port)
    caught(lambda: store.put("k", io.BytesIO(b"x")), StorageMisconfigured, secrets=(smb.password,),
           settings=("APPSVC_DR_STORE__SMB_PATH",))


def test_smb_read_only_share_is_permission_denied(smb: SmbServer) -> None:
    # Given a share the user may only read / When an object is put / Then StoragePermissionDenied
    store = SmbStore(smb.unc(share=smb.readonly_share), smb.username, smb.password, port=smb.port)
    caught(lambda: store.put("k", io.BytesIO(b"x")), StoragePermissionDenied, secrets=(smb.password,),
           settings=("APPSVC_DR_STORE__SMB_USERNAME",))


# --------------------------------------------------------------------------------------------- local
def test_local_missing_root_without_create_is_misconfigured(tmp_path: Path) -> None:
    # Given a store directory that does not exist (an unmounted volume) and create=False
    store = LocalStore(tmp_path / "not-mounted", create=False)
    # When used / Then StorageMisconfigured naming LOCAL_PATH, and nothing was created
    for call in (lambda: store.put("k", io.BytesIO(b"x")), lambda: store.stat("k"), lambda: list(store.list())):
        caught(call, StorageMisconfigured, settings=("APPSVC_DR_STORE__LOCAL_PATH",))
    assert not (tmp_path / "not-mounted").exists()


def test_local_root_that_is_a_file_is_misconfigured(tmp_path: Path) -> None:
    # Given the configured path is a regular file / When used / Then StorageMisconfigured
    (tmp_path / "file").write_bytes(b"")
    caught(lambda: LocalStore(tmp_path / "file").put("k", io.BytesIO(b"x")), StorageMisconfigured,
           settings=("APPSVC_DR_STORE__LOCAL_PATH",))


def _unprivileged(call: Callable[[], object]) -> tuple[str, str]:
    """Run ``call`` as 'nobody' in a forked child when we are root (root ignores permission bits);
    return (exception class name, hint)."""
    if os.geteuid() != 0:
        try:
            call()
        except Exception as exc:
            return type(exc).__name__, getattr(exc, "hint", "")
        return "", ""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, run, report, and leave without running any cleanup
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                call()
                result = ["", ""]
            except Exception as exc:
                result = [type(exc).__name__, getattr(exc, "hint", "")]
            os.write(write_fd, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    name, hint = json.loads(data or b'["child crashed", ""]')
    return name, hint


def test_local_unwritable_directory_is_permission_denied() -> None:
    # Given a store directory the worker's user may read but not write
    root = Path(tempfile.mkdtemp(prefix="appsvc-dr-ro-"))
    try:
        root.chmod(0o755)
        (root / "store").mkdir(mode=0o755)
        store = LocalStore(root / "store")
        # When an object is put / Then StoragePermissionDenied with a hint naming LOCAL_PATH
        name, hint = _unprivileged(lambda: store.put("k", io.BytesIO(b"x")))
        assert name == "StoragePermissionDenied"
        assert "APPSVC_DR_STORE__LOCAL_PATH" in hint
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize(("code", "cls"), [(errno.ENOSPC, StorageFull), (errno.EDQUOT, StorageFull),
                                           (errno.EROFS, StoragePermissionDenied), (errno.EIO, StorageUnavailable),
                                           (errno.ESTALE, StorageUnavailable)])
def test_local_os_errors_are_classified(code: int, cls: type[StorageError]) -> None:
    # Given an OSError from the file system / When classified / Then the right class with a hint
    err = classify_os_error(OSError(code, os.strerror(code)), where="file:///x", what="write 'k'")
    assert isinstance(err, cls) and err.hint


# ------------------------------------------------------------------------------------------- factory
def test_factory_builds_each_kind_and_rejects_bad_settings_with_hints(tmp_path: Path) -> None:
    # Given settings for each kind / When built / Then the right backend, named without credentials
    key, password = secret(), secret()
    local = build_store(StoreSettings(kind="local", local_path=tmp_path))
    s3 = build_store(StoreSettings(kind="s3", s3_access_key="ak", s3_secret_key=key,
                                   s3_bucket="backups"))
    smb = build_store(StoreSettings(kind="smb", smb_path=r"\\fs01\dr\stamp1", smb_username="svc",
                                    smb_password=password))
    assert (local.name, s3.name, smb.name) == (tmp_path.absolute().as_uri(), "s3://backups", "smb://fs01/dr/stamp1")
    assert key not in repr(s3) + s3.name and password not in repr(smb) + smb.name
    # Given unusable settings / When built / Then StorageMisconfigured naming the setting to fix
    for settings, setting in ((StoreSettings(kind="smb"), "APPSVC_DR_STORE__SMB_PATH"),
                              (StoreSettings(kind="smb", smb_path="fs01/share"), "APPSVC_DR_STORE__SMB_PATH"),
                              (StoreSettings(kind="s3", s3_bucket="Bad_Bucket"), "APPSVC_DR_STORE__S3_BUCKET")):
        caught(lambda: build_store(settings), StorageMisconfigured, settings=(setting,))


def test_s3_put_of_bytes_the_server_checked_needs_no_head_request(s3_server, monkeypatch):
    # Given an S3 store whose HEAD requests are counted
    store = S3Store(s3_server.endpoint, s3_server.access_key, s3_server.secret_key,
                    f"nohead-{random_secrets.token_hex(4)}", secure=False)
    heads: list[str] = []
    real_stat = store._client.stat_object
    monkeypatch.setattr(store._client, "stat_object", lambda bucket, key, *a, **k: heads.append(key) or
                        real_stat(bucket, key, *a, **k))
    data = b"pack bytes " * 1000
    # When bytes go up with their SHA-256 (one request the server checks), and others without it
    store.put("p/known", io.BytesIO(data), size=len(data), sha256=hashlib.sha256(data).hexdigest())
    store.put("p/unknown", io.BytesIO(data), size=len(data))
    # Then only the second is looked at again to learn what landed
    assert heads == ["p/unknown"]
    # (a wrong SHA-256 is the server's to refuse: MinIO and S3 do, moto does not check it, see DESIGN.md)
