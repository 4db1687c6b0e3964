"""Every SMB connection the house opens is closed after use, seen from the real Samba server (``smbstatus``):
a store's close(), the staged-file lookup's ``with`` block (also when the block fails), the upload worker (a
connection per staged file, not left behind while it keeps running; its artifact store's when it stops) and a
CLI command."""
from __future__ import annotations

import contextlib
import hashlib
import io
import time

import pytest

from contracts import ArtifactReady, ArtifactReadyPayload
from tests.fixtures.rabbit import running, settings_for, tap, wait_for
from tests.fixtures.smbd import SmbServer
from tests.integration.test_upload_worker import planned, stage, upload_settings
from tests.unit.certs import signed
from tests.unit.forge import plan_set
from workers.app import App
from workers.cli import main
from workers.config import load_settings
from workers.runtime.publisher import Publisher
from workers.storage.smb import SmbStore
from workers.storage.staged import DATABASE_DIR_SETTING, Root, locate

pytestmark = pytest.mark.integration


def settled(smb: SmbServer, before: set[str], timeout: float = 10.0) -> set[str]:
    """The sessions opened since ``before`` that are still open once the server had time to tear down closed
    ones (smbd ends a session asynchronously after the client's LOGOFF)."""
    deadline = time.monotonic() + timeout
    while (opened := smb.sessions() - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    return opened


def test_a_closed_store_logs_off_and_reconnects_when_used_again(smb_server: SmbServer) -> None:
    # Given a store that wrote an object: the server holds one new session for it
    before = smb_server.sessions()
    store = SmbStore(smb_server.unc("closing"), smb_server.username, smb_server.password, port=smb_server.port)
    store.put("k", io.BytesIO(b"data"))
    assert len(smb_server.sessions() - before) == 1 and store.session.open_connections == 1
    # When it is closed / Then the session is gone on the server and no connection is left on our side
    store.close()
    assert settled(smb_server, before) == set() and store.session.open_connections == 0
    # And used again it reconnects, and closing again logs off again
    with store.open("k") as stream:
        assert stream.read() == b"data"
    assert len(smb_server.sessions() - before) == 1
    store.close()
    assert settled(smb_server, before) == set()


def test_a_staged_lookup_closes_its_connection_when_the_block_ends_even_on_error(smb_server: SmbServer) -> None:
    # Given a file staged on the share and the staging settings of the real server
    unc = stage(smb_server, "closing.bak", b"staged bytes")
    staging = load_settings().staging.model_copy(update={
        "smb_username": smb_server.username, "smb_password": smb_server.password, "smb_port": smb_server.port})
    roots = [Root(smb_server.unc("staging"), DATABASE_DIR_SETTING)]
    before = smb_server.sessions()
    # When the file is read inside the lookup's block / Then a session is open while it runs, and none after it
    with locate(unc, staging, roots) as (backend, key):
        with backend.open(key) as stream:
            assert stream.read() == b"staged bytes"
        assert len(smb_server.sessions() - before) == 1
    assert settled(smb_server, before) == set()
    # And a block that fails after connecting closes its connection too
    with pytest.raises(RuntimeError, match="producer bug"):
        with locate(unc, staging, roots) as (backend, key):
            assert backend.exists(key)
            raise RuntimeError("producer bug")
    assert settled(smb_server, before) == set()


def test_the_upload_worker_leaves_no_smb_session_behind(rabbit_vhost, tmp_path, smb_server: SmbServer) -> None:
    # Given an upload worker (local store) and two files staged on the share
    settings = upload_settings(rabbit_vhost, tmp_path, smb_server)
    planned(tmp_path, "set-c")
    data = {name: f"{name} ".encode() * 1000 for name in ("a.bak", "b.bak")}
    staged = {name: stage(smb_server, name, body) for name, body in data.items()}
    seen: list = []
    before = smb_server.sessions()
    with running(App(settings, ["upload", tap(seen, "artifact-stored")])):
        # When both are uploaded
        with Publisher(settings.broker) as pub:
            for name, body in data.items():
                pub.publish(ArtifactReady(source="test", stamp="stamp1", correlation_id="set-c",
                                          payload=ArtifactReadyPayload(
                                              component="databases", name=name, staged_path=staged[name],
                                              size=len(body), sha256=hashlib.sha256(body).hexdigest(),
                                              delete_staged=True)))
        wait_for(lambda: len(seen) == 2, 30, what="two artifact-stored")
        # Then, while the worker keeps running, the server holds no session of it
        assert settled(smb_server, before) == set()


def test_a_cli_command_closes_the_store_it_opened(smb_server: SmbServer, monkeypatch, capsys) -> None:
    # Given the artifact store configured on the share
    for name, value in {"KIND": "smb", "SMB_PATH": smb_server.unc("cli-store"), "SMB_USERNAME": smb_server.username,
                        "SMB_PASSWORD": smb_server.password, "SMB_PORT": str(smb_server.port)}.items():
        monkeypatch.setenv(f"APPSVC_DR_STORE__{name}", value)
    before = smb_server.sessions()
    # When a command reads it in this process (the process does not exit, as in a long-lived caller)
    assert main(["artifacts", "list", "--stamp", "stamp1"]) == 0
    assert "no backup sets for stamp stamp1" in capsys.readouterr().out
    # Then the store's session is gone from the server
    assert settled(smb_server, before) == set()


def test_a_worker_logs_off_its_smb_artifact_store_when_it_stops(rabbit_vhost, tmp_path,
                                                                 smb_server: SmbServer) -> None:
    # Given an upload worker whose artifact store is on the share, and a planned set there
    store = {"kind": "smb", "smb_path": smb_server.unc(f"store-{rabbit_vhost}"), "smb_username": smb_server.username,
             "smb_password": smb_server.password, "smb_port": smb_server.port}
    settings = settings_for(rabbit_vhost, store=store, staging={
        "smb_username": smb_server.username, "smb_password": smb_server.password, "smb_port": smb_server.port,
        "database_dir": smb_server.unc("staging")})
    with contextlib.closing(SmbStore(store["smb_path"], smb_server.username, smb_server.password,
                                     port=smb_server.port)) as planner:
        plan_set(signed(planner, tmp_path), "set-w", "databases")
    body = b"stored on the share " * 100
    staged = stage(smb_server, "w.bak", body)
    seen: list = []
    before = smb_server.sessions()
    with running(App(settings, ["upload", tap(seen, "artifact-stored")])):
        # When it stored an artifact (its store's session stays open while it runs, for the next one)
        with Publisher(settings.broker) as pub:
            pub.publish(ArtifactReady(source="test", stamp="stamp1", correlation_id="set-w",
                                      payload=ArtifactReadyPayload(component="databases", name="w.bak",
                                                                   staged_path=staged, size=len(body),
                                                                   sha256=hashlib.sha256(body).hexdigest())))
        wait_for(lambda: seen, 30, what="artifact-stored")
        assert len(smb_server.sessions() - before) == 1
    # Then once it stopped, the server holds no session of it
    assert settled(smb_server, before) == set()
