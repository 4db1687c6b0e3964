"""Events name nothing outside configured roots (issue 12, item 3): hostile ``staged_path`` / ``drop_path`` values
through real workers on real RabbitMQ (a real smbd for the share), dead-lettered with the reason before any I/O,
while the worker goes on to process a genuine event. A UNC path to a foreign host never opens a TCP connection
to it (a connection would send the staging NTLM credentials): a listener on that host proves it."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import socket
import stat
import threading
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import pytest

from contracts import (ArtifactReady, ArtifactReadyPayload, DatabaseBackupRequested, DatabaseBackupRequestedPayload,
                       SecretsRotated, SecretsRotatedPayload, utcnow)
from tests.fixtures import started
from tests.unit.forge import configured_store, plan_set
from tests.fixtures.postgres import PG_HOST, PG_PORT, PG_USER, fill_sample, postgres_available, scratch_database
from tests.fixtures.rabbit import dead_letters, running, settings_for, tap, wait_for
from tests.unit.certs import make_cert, signing_settings
from workers.app import App
from workers.artifacts.service import ArtifactStore
from workers.runtime.publisher import Publisher
from workers.secrets.drop import copy_to_drop
from workers.secrets.versions import set_reference, version_id, version_key
from workers.storage.codec import KeyRing, load_certificate
from workers.storage.factory import build_store

pytestmark = pytest.mark.integration
FOREIGN_HOST = "127.0.0.2"        # smbd binds 127.0.0.1 only; a foreign "SMB server" listens here


class Listener:
    """A TCP listener standing in for a foreign SMB host; records every connection it accepts."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted.append(peer)
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@contextlib.contextmanager
def listening(host: str, port: int = 0) -> Iterator[Listener]:
    listener = Listener(host, port)
    try:
        # the listener works: a probe connection is seen (then forgotten)
        with socket.create_connection((host, listener.port), timeout=5):
            pass
        wait_for(lambda: listener.accepted, 5, what="probe connection")
        listener.accepted.clear()
        yield listener
    finally:
        listener.close()


def outside_file(directory: Path, name: str, data: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(data)
    return path


def await_dead_letters(settings, worker: str, count: int):
    return wait_for(lambda: (found := dead_letters(settings, worker)) and len(found) >= count and found, 60,
                    what=f"{count} dead letters")


# --------------------------------------------------------------------------------------------- upload
def test_hostile_staged_paths_are_dead_lettered_unread_and_the_worker_stores_a_genuine_one(
        rabbit_vhost, tmp_path, smb_server):
    # Given a staging share on the real smbd (database_dir) and a local extra staging root (STAGING__ROOTS)
    make_cert("roots-upload").write(tmp_path)
    share_dir = smb_server.path / f"staging-{rabbit_vhost}"
    share_dir.mkdir()
    shutil.chown(share_dir, smb_server.username)
    local_root = tmp_path / "local-staging"
    local_root.mkdir()
    settings = settings_for(rabbit_vhost, store={"kind": "local", "local_path": str(tmp_path / "store")},
                            encryption={"certificate": str(tmp_path / "cert.pem")},
                            staging={"smb_username": smb_server.username, "smb_password": smb_server.password,
                                     "smb_port": smb_server.port, "database_dir": smb_server.unc(share_dir.name),
                                     "roots": [str(local_root)]})
    # And files outside every root that an attacker would like uploaded (in plaintext) and deleted
    victim = outside_file(tmp_path / "outside", "victim.bak", b"outside-the-roots " * 100)
    os.symlink(victim, local_root / "link.bak")                            # a link inside the root, pointing out
    on_share = outside_file(smb_server.path, f"victim-{rabbit_vhost}.bak", b"share root, not staging")
    readonly = outside_file(smb_server.readonly_path, f"victim-{rabbit_vhost}.bak", b"another share")
    hostile = {
        "dot-dot": f"{local_root}/../outside/victim.bak",
        "absolute": str(victim),
        "symlink": str(local_root / "link.bak"),
        "foreign-host": rf"\\{FOREIGN_HOST}\{smb_server.share}\{share_dir.name}\victim.bak",
        "other-share": smb_server.unc(readonly.name, share=smb_server.readonly_share),
        "share-climb": smb_server.unc(share_dir.name, "..", on_share.name),
        "relative": "outside/victim.bak",
    }
    genuine = {"local": local_root / "good.bak", "share": share_dir / "good.bak"}
    for path in genuine.values():
        path.write_bytes(b"genuine " * 1000)
    shutil.chown(genuine["share"], smb_server.username)
    # And the genuine files' set was planned by the catalog (the hostile events' set never was)
    plan_set(build_store(settings.store), "set-g", "databases")
    seen: list = []
    app = App(settings, ["upload", tap(seen, "artifact-stored")])
    with listening(FOREIGN_HOST, smb_server.port) as foreign, running(app), Publisher(settings.broker) as pub:
        # When artifact-ready events name each hostile path (asking for deletion), then genuine files
        for name, path in hostile.items():
            pub.publish(ArtifactReady(source="attacker", stamp="stamp1", correlation_id="set-h", payload=
                                      ArtifactReadyPayload(component="databases", name=f"{name}.bak",
                                                           staged_path=path, delete_staged=True)))
        for name, path in (("local", str(genuine["local"])), ("share", smb_server.unc(share_dir.name, "good.bak"))):
            pub.publish(ArtifactReady(source="db-backup", stamp="stamp1", correlation_id="set-g", payload=
                                      ArtifactReadyPayload(component="databases", name=f"{name}.bak",
                                                           staged_path=path, delete_staged=True)))
        # Then every hostile event is dead-lettered at once, naming the path and the setting
        letters = await_dead_letters(settings, "upload", len(hostile))
        # And the worker went on to store the genuine files
        wait_for(lambda: len(seen) == 2, 60, what="genuine artifacts stored")
        assert foreign.accepted == [], "a UNC path to a foreign host opened a connection to it"
    assert len(letters) == len(hostile)
    for letter in letters:
        assert letter.reason == "permanent"
        assert "refused" in letter.header("x-dr-error")
        assert "APPSVC_DR_STAGING__DATABASE_DIR" in letter.header("x-dr-hint") or \
            "APPSVC_DR_STAGING__DATABASE_DIR" in letter.header("x-dr-error")
    assert {letter.header("x-dr-error").split("'")[1].replace("\\\\", "\\") for letter in letters} == \
        set(hostile.values())
    # And nothing outside the roots was read into the store or deleted
    assert victim.read_bytes() == b"outside-the-roots " * 100
    assert on_share.exists() and readonly.exists()
    assert not (tmp_path / "store" / "stamp1" / "set-h").exists()
    assert sorted(e.payload.name for e in seen) == ["local.bak", "share.bak"]
    assert not genuine["local"].exists() and not genuine["share"].exists()     # genuine stages deleted


# -------------------------------------------------------------------------------------------- secrets
def test_hostile_drop_paths_and_future_dates_are_refused_and_a_genuine_rotation_is_stored(rabbit_vhost, tmp_path):
    # Given a local drop directory and staging SMB credentials whose port leads to a foreign listener
    cert, key = make_cert("roots-secrets").write(tmp_path)
    drop = tmp_path / "drop"
    drop.mkdir()
    with listening(FOREIGN_HOST) as foreign:
        settings = settings_for(rabbit_vhost, store={"kind": "local", "local_path": str(tmp_path / "store")},
                                encryption={"certificate": str(cert), **signing_settings(tmp_path)},
                                secrets={"drop_path": str(drop)},
                                staging={"smb_username": "dr-staging", "smb_password": "staging-password",
                                         "smb_port": foreign.port})
        outside = outside_file(tmp_path / "outside", "SystemSecrets.json", json.dumps({"other": "file"}).encode())
        os.symlink(outside, drop / "SystemSecrets-link.json")
        notes = outside_file(drop, "notes.json", b'{"not": "a secrets export"}')
        early = outside_file(drop, "SystemSecrets-early.json", json.dumps({"genuine": "but dated ahead"}).encode())
        now = utcnow()
        hostile = {
            "dot-dot": (f"{drop}/../outside/SystemSecrets.json", now),
            "absolute": (str(outside), now),
            "symlink": (str(drop / "SystemSecrets-link.json"), now),
            "other-name": (str(notes), now),
            "foreign-host": (rf"\\{FOREIGN_HOST}\drop\SystemSecrets.json", now),
            "future": (str(early), now + timedelta(days=3000)),
        }
        # And a forged version dated 9999 already in the store (made with only the public certificate)
        store = configured_store(settings)
        attacker = ArtifactStore(build_store(settings.store), certificate=load_certificate(cert))   # no signing key
        forged = b'{"forged": true}'
        forged_id = version_id(utcnow().replace(year=9999), hashlib.sha256(forged).hexdigest())
        attacker.put(version_key("stamp1", forged_id), lambda: contextlib.nullcontext(io.BytesIO(forged)),
                     require_encryption=True)
        exported = tmp_path / "SystemSecrets.json"
        exported.write_text(json.dumps({"SqlServerPassword": "genuine"}))
        seen: list = []
        app = App(settings, ["secrets", "catalog", tap(seen, "secrets-stored", "artifact-stored")])  # catalog plans
        with running(app), Publisher(settings.broker) as pub:
            # When secrets-rotated events name each hostile drop path, then a genuine rotation follows
            for name, (path, when) in hostile.items():
                pub.publish(SecretsRotated(source="attacker", stamp="stamp1", correlation_id=f"rot-{name}",
                                           payload=SecretsRotatedPayload(drop_path=path, rotated_by="x",
                                                                         rotated_at=when)))
            dropped = copy_to_drop(exported, settings.secrets, settings.staging)
            pub.publish(SecretsRotated(source="hook", stamp="stamp1", correlation_id="rot-genuine",
                                       payload=SecretsRotatedPayload(drop_path=dropped, rotated_by="ops",
                                                                     rotated_at=utcnow())))
            # Then each hostile event is dead-lettered with the reason
            letters = await_dead_letters(settings, "secrets", len(hostile))
            # And the genuine rotation is stored, and the backup it triggers links it (not the forged 9999 one)
            wait_for(lambda: any(e.type == "artifact-stored" for e in seen), 60, what="backup set linked")
        assert foreign.accepted == [], "a UNC drop path to a foreign host opened a connection to it"
    assert len(letters) == len(hostile) and all(letter.reason == "permanent" for letter in letters)
    errors = {letter.header("x-dr-error") for letter in letters}
    assert sum("refused" in e for e in errors) == 5 and sum("in the future" in e for e in errors) == 1
    assert all("APPSVC_DR_SECRETS__DROP_PATH" in letter.header("x-dr-hint") for letter in letters
               if "refused" in letter.header("x-dr-error") and "file name" not in letter.header("x-dr-error"))
    assert outside.exists() and notes.exists() and early.exists()            # nothing read-and-deleted
    stored = next(e for e in seen if e.type == "secrets-stored").payload
    assert not stored.duplicate and stored.version_id != forged_id
    linked = next(e for e in seen if e.type == "artifact-stored")
    reference = set_reference(store, "stamp1", linked.correlation_id, KeyRing.from_files(keys=[key]))
    assert reference["version_id"] == stored.version_id


# ------------------------------------------------------------------------------------------- databases
def test_an_unconfigured_database_is_dead_lettered_and_a_configured_one_is_backed_up(rabbit_vhost, tmp_path):
    with started("PostgreSQL", postgres_available()), scratch_database() as configured:
        # Given a db-backup worker configured for one database, on a server that also holds `postgres`
        fill_sample(configured, rows=200)
        staging = tmp_path / "staging"
        settings = settings_for(rabbit_vhost, staging={"database_dir": str(staging)},
                                database={"engine": "postgres", "server": PG_HOST, "port": PG_PORT,
                                          "username": PG_USER, "databases": [configured]})
        seen: list = []
        app = App(settings, ["db-backup", tap(seen, "artifact-ready", "database-backed-up")])
        with running(app), Publisher(settings.broker) as pub:
            # When a publisher asks for a database the login can read but that is not configured, then the real one
            for database in ("postgres", configured):
                pub.publish(DatabaseBackupRequested(source="attacker" if database == "postgres" else "db-backup",
                                                    stamp="stamp1", correlation_id="set-db", payload=
                                                    DatabaseBackupRequestedPayload(database=database)))
            # Then the unconfigured one is dead-lettered naming the database and the setting
            letters = await_dead_letters(settings, "db-backup", 1)
            # And the configured one is dumped and handed to the upload worker
            wait_for(lambda: any(e.type == "artifact-ready" for e in seen), 60, what="artifact-ready")
    assert len(letters) == 1 and letters[0].reason == "permanent"
    assert "'postgres' is not configured" in letters[0].header("x-dr-error")
    assert "APPSVC_DR_DATABASE__DATABASES" in letters[0].header("x-dr-hint")
    assert [e.payload.database for e in seen if e.type == "database-backed-up"] == [configured]
    assert sorted(p.name for p in staging.iterdir()) == [".jobs", f"stamp1-set-db-{configured}.dump"]
    # (the refused one left no job record either: refused before any I/O)
    assert [p.name for p in (staging / ".jobs").iterdir()] == [f"stamp1+set-db+{configured}.dump+done.json"]
    dump = staging / f"stamp1-set-db-{configured}.dump"
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600                            # plaintext at rest: owner-only
