"""`appsvc-dr demo`: the main job on the embedded default — local RabbitMQ, a local-directory store.

Runs every built-in worker in this process, plays the secret-rotation hook with a made-up
SystemSecrets.json, and prints every event the workers exchange until the backup set is complete (or the
flow goes quiet), then what landed in the store and how to restore it.
"""
from __future__ import annotations

import contextlib
import json
import queue
import shutil
import sys
import sysconfig
import threading
import time
from pathlib import Path

import pika

from contracts import SecretsRotated, SecretsRotatedPayload, new_backup_set_id, utcnow
from workers.app import BUILTIN, App
from workers.config import Settings, load_settings
from workers.demo_azurite import (SOURCE, DemoAzurite, fill_demo_account, find_azurite, restore_into_new_account,
                                  running_azurite)
from workers.runtime.amqp import connection_parameters
from workers.runtime.publisher import Publisher
from workers.secrets.drop import copy_to_drop
from workers.storage.codec import generate_self_signed
from workers.storage.signing import generate_signing_key

DEMO_DATABASE = "appsvc_dr_demo"
DEMO_SECRETS = {"comment": "made-up demo secrets, not a real stamp", "SqlServerPassword": "demo-only",
                "FileServerPassword": "demo-only", "EncryptionKey": "00" * 32}


def demo_settings(root: Path, base: Settings, functions_cs: str | None = None) -> Settings:
    """The embedded default: everything under ``root``; a demo certificate and signing key made on first use;
    with ``functions_cs`` (the demo's Azurite account) the ``functions`` component too."""
    keys, drop = root / "keys", root / "drop"
    for d in (keys, drop):
        d.mkdir(parents=True, exist_ok=True)
    cert, key = keys / "demo-cert.pem", keys / "demo-key.pem"
    if not cert.exists():
        cert_pem, key_pem = generate_self_signed("appsvc-dr demo", days=365)
        key.touch(mode=0o600)
        key.write_bytes(key_pem)
        cert.write_bytes(cert_pem)
    signing, verify = keys / "demo-signing.pem", keys / "demo-verify.pem"
    if not signing.exists():
        private, public, _kid = generate_signing_key()
        signing.touch(mode=0o600)
        signing.write_bytes(private)
        verify.write_bytes(public)
    share = root / "share"
    if not share.exists():
        make_demo_share(share)
    functions = {"components": ["secrets", "databases", "fileshare", "functions"],
                 "functions": {"accounts": [{"name": SOURCE, "connection_string": functions_cs}]}} \
        if functions_cs else {}
    return load_settings(store={"kind": "local", "local_path": str(root / "store")}, **functions,
                         encryption={"certificate": str(cert), "signing_key": str(signing),
                                     "verify_keys": [str(verify)]}, secrets={"drop_path": str(drop.resolve())},
                         staging={"database_dir": str((root / "staging").resolve())},
                         database={"engine": "postgres", "server": "127.0.0.1", "username": "postgres",
                                   "databases": [DEMO_DATABASE]},
                         fileshare={"source": str(share.resolve()), "cache_dir": str((root / "cache").resolve())},
                         metrics={"port": 0}, broker=json.loads(base.broker.model_dump_json()) |
                         {"password": base.broker.password.get_secret_value()})


def make_demo_share(share: Path) -> None:
    """A small stand-in for the App Service content share: sites with files, one empty directory."""
    for site in ("site-a", "site-b"):
        wwwroot = share / site / "wwwroot"
        wwwroot.mkdir(parents=True)
        (wwwroot / "index.html").write_text(f"<h1>{site}</h1>\n")
        (wwwroot / "app.dll").write_bytes(bytes(range(256)) * 400)
    (share / "site-c" / "logs").mkdir(parents=True)


def ensure_demo_database(settings: Settings) -> None:
    """Create the demo database on the local PostgreSQL (once), with a table of made-up sites."""
    import contextlib

    import pyodbc

    base = "DRIVER={PostgreSQL Unicode};SERVER=127.0.0.1;PORT=5432;UID=postgres;"
    with contextlib.closing(pyodbc.connect(base + "DATABASE=postgres", autocommit=True, timeout=5)) as conn:
        if conn.cursor().execute("SELECT 1 FROM pg_database WHERE datname = ?", DEMO_DATABASE).fetchone():
            return
        conn.cursor().execute(f'CREATE DATABASE "{DEMO_DATABASE}"')
    with contextlib.closing(pyodbc.connect(base + f"DATABASE={DEMO_DATABASE}", autocommit=True, timeout=5)) as conn:
        conn.cursor().execute("CREATE TABLE sites AS SELECT g AS id, 'site-' || g AS name, md5(g::text) AS etag "
                              "FROM generate_series(1, 5000) g")


class Observer:
    """An exclusive queue bound to every event type: what the demo prints."""

    def __init__(self, settings: Settings) -> None:
        self.events: queue.Queue = queue.Queue()
        self._settings, self._stop = settings, threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Observer":
        self._thread.start()
        self._ready.wait(10)
        return self

    def _run(self) -> None:
        with pika.BlockingConnection(connection_parameters(self._settings.broker)) as conn:
            ch = conn.channel()
            ch.exchange_declare(self._settings.broker.exchange, exchange_type="topic", durable=True)
            name = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
            ch.queue_bind(name, self._settings.broker.exchange, routing_key="#")
            self._ready.set()
            while not self._stop.is_set():
                method, _props, body = ch.basic_get(name, auto_ack=True)
                if method is None:
                    conn.sleep(0.1)
                    continue
                self.events.put(json.loads(body))

    def stop(self) -> None:
        self._stop.set()


def describe(event: dict) -> str:
    p = event["payload"]
    details = {
        "backup-due": lambda: f"set {p['backup_set_id']} ({', '.join(p['components'])}; {p['reason']})",
        "secrets-rotated": lambda: f"drop {p['drop_path']} by {p['rotated_by']}",
        "secrets-stored": lambda: f"version {p['version_id']} fingerprint {p['fingerprint'][:12]}"
                                  f"{' (duplicate)' if p['duplicate'] else ''}",
        "artifact-ready": lambda: f"{p['component']}/{p['name']} staged at {p['staged_path']}",
        "artifact-stored": lambda: f"{p['key']} {p['plaintext_size']}→{p['stored_size']} bytes "
                                   f"{'encrypted' if p['encrypted'] else 'plain'}",
        "job-failed": lambda: f"{p['worker']}: {p['message']} — how to fix: {p['hint']}",
        "database-backed-up": lambda: f"{p['database']} ({p['engine']}) {p['size']} bytes in {p['duration_seconds']}s",
        "database-backup-requested": lambda: p["database"],
        "fileshare-synced": lambda: f"snapshot {p['snapshot_id']}: {p['files']} files, {p['dirs']} dirs, "
                                    f"{p['new_bytes']} new bytes{' (partial)' if p.get('partial') else ''}",
        "functions-backed-up": lambda: "; ".join(f"{a['account']}: {a['blobs']} blobs ({a['blobs_read']} read), "
                                                 f"{a['messages']} messages, {a['entities']} entities"
                                                 for a in p["accounts"]),
        "backup-set-completed": lambda: f"{', '.join(p['components'])}: {p['artifacts']} artifacts, "
                                        f"{p['stored_bytes']} bytes stored",
    }.get(event["type"], lambda: json.dumps(p)[:100])
    return f"{event['type']:<22} {event['source']:<16} {details()}"


def run_demo(base: Settings, root: Path, timeout: float = 120.0, out=print,
             azurite_command: str | None = None) -> int:
    command, why = find_azurite(azurite_command)
    with contextlib.ExitStack() as stack:
        azurite = None
        if command is not None:
            try:
                azurite = stack.enter_context(running_azurite(command))
                fill_demo_account(azurite)
            except Exception as exc:         # noqa: BLE001 - the demo goes on without the optional component
                stack.close()
                azurite, why = None, f"Azurite ({command}) could not be used: {type(exc).__name__}: {exc}"
        if azurite is None:
            out(f"functions (Function Apps storage): SKIPPED, {why}")
        else:
            out(f"functions (Function Apps storage): Azurite on 127.0.0.1:{azurite.ports[0]} with the made-up "
                f"account {SOURCE} (3 blobs, 1 queue message, 1 table entity)")
        return _run(demo_settings(root, base, azurite and azurite.connection_string(SOURCE)), root, timeout, out,
                    azurite)


def _run(settings: Settings, root: Path, timeout: float, out, azurite: DemoAzurite | None) -> int:
    ensure_demo_database(settings)
    app = App(settings, sorted(BUILTIN))
    thread = threading.Thread(target=app.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not all(r.connected.is_set() for r in app.runners) and time.monotonic() < deadline:
        time.sleep(0.1)
    observer = Observer(settings).start()
    out(f"workers running: {', '.join(r.spec.name for r in app.runners)}; store {settings.store.local_path}")
    exported = root / "SystemSecrets.json"
    exported.write_text(json.dumps(DEMO_SECRETS))
    exported.chmod(0o600)
    dropped = copy_to_drop(exported, settings.secrets, settings.staging)
    with Publisher(settings.broker) as pub:
        pub.publish(SecretsRotated(source="demo", stamp=settings.stamp, correlation_id=new_backup_set_id(),
                                   payload=SecretsRotatedPayload(drop_path=dropped, rotated_by="demo",
                                                                 rotated_at=utcnow())))
    failures, completed, set_id, last, end = 0, False, "", time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < end and time.monotonic() - last < 8:
        try:
            event = observer.events.get(timeout=0.5)
        except queue.Empty:
            continue
        last = time.monotonic()
        failures += event["type"] == "job-failed"
        out(f"  {event['occurred_at'][11:23]}  {describe(event)}")
        if event["type"] == "backup-set-completed":
            completed, set_id = True, event["correlation_id"]
            break
    observer.stop()
    app.stop()
    thread.join(60)
    out(f"\nstore: {settings.store.local_path}")
    for path in sorted(Path(settings.store.local_path).rglob("*")):
        if path.is_file() and not path.name.endswith((".drmeta",)):
            out(f"  {path.relative_to(settings.store.local_path)}  ({path.stat().st_size} bytes)")
    key = root / "keys" / "demo-key.pem"
    drilled = completed and drill(settings, key, out, azurite, set_id)
    where = (f"APPSVC_DR_STORE__LOCAL_PATH={settings.store.local_path} "
             f"APPSVC_DR_ENCRYPTION__VERIFY_KEYS={','.join(map(str, settings.encryption.verify_keys))}")
    cli = f"{where} {command_name()}"
    out(f"\nsee it: {cli} artifacts list")
    out(f"restore the secrets: {cli} restore secrets --stamp {settings.stamp} --key {key} --out ./SystemSecrets.json")
    out(f"prove it restores: {cli} drill --stamp {settings.stamp} --key {key}")
    return 1 if failures or not completed or not drilled else 0


def drill(settings: Settings, key: Path, out, azurite: DemoAzurite | None = None, set_id: str = "") -> bool:
    """The restore drill on the set just made: every component restored into scratch space and verified; with
    the demo's Azurite, the Function Apps storage copy also restored into a new account there."""
    from workers.artifacts.service import ArtifactStore
    from workers.drill.results import table
    from workers.drill.run import run_drill
    from workers.storage.codec import KeyRing
    from workers.storage.factory import build_store
    from workers.storage.signing import attach, trust_from_settings

    out("\nrestore drill: the set just made, restored into scratch space and verified")
    store = ArtifactStore(attach(build_store(settings.store), trust_from_settings(settings.encryption)))
    keys = KeyRing.from_files(keys=[key])
    with contextlib.closing(store):
        result, _ = run_drill(settings, store, keys, settings.stamp, set_id=set_id or None,
                              say=lambda line: out(f"  {line}"))
        out("\n".join(f"  {line}" for line in table(result)))
        restored = azurite is None or restore_into_new_account(store, keys, settings.stamp, set_id, azurite, out)
    return result.passed and restored


def command_name() -> str:
    """How to start this installation's ``appsvc-dr`` from a shell: its name when PATH finds it (an activated
    venv, an image), else its path (e.g. .venv/bin/appsvc-dr after deploy/setup.sh on Debian)."""
    script = Path(sysconfig.get_path("scripts")) / "appsvc-dr"
    found = shutil.which("appsvc-dr")
    if found and Path(found).resolve() == script.resolve():
        return "appsvc-dr"
    return str(script) if script.is_file() else f"{sys.executable} -m workers.cli"
