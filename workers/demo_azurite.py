"""The demo's Function Apps storage: when Azurite (the Azure Storage emulator; ``bash deploy/setup.sh`` installs it
into .tools/azurite) or ``azurite`` on PATH is there, the demo starts it on loopback, in memory, with two made-up
accounts: ``demofuncs`` (what a Function App would use: a few blobs, a queue message, a table entity) and
``demorestored`` (the new account the demo restores the copy into). Without it the demo says it skipped the
component and why."""
from __future__ import annotations

import base64
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
SOURCE, TARGET = "demofuncs", "demorestored"
KEYS = {SOURCE: base64.b64encode(b"demo-only-functions-account-key-1").decode(),
        TARGET: base64.b64encode(b"demo-only-functions-account-key-2").decode()}
HOST = "127.0.0.1"


@dataclass(frozen=True)
class DemoAzurite:
    ports: tuple[int, int, int]          # blob, queue, table

    def connection_string(self, account: str) -> str:
        b, q, t = self.ports
        return (f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={KEYS[account]};"
                f"BlobEndpoint=http://{HOST}:{b}/{account};QueueEndpoint=http://{HOST}:{q}/{account};"
                f"TableEndpoint=http://{HOST}:{t}/{account};")


def find_azurite(command: str | None = None) -> tuple[str | None, str]:
    """Azurite's command (``command`` if given, else .tools/azurite, else ``azurite`` on PATH), or None and why."""
    if command is not None:
        found = shutil.which(command)
        if found is None:
            return None, f"{command} (--azurite) is not an executable"
    else:
        local = ROOT / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite"
        found = str(local) if local.exists() else shutil.which("azurite")
        if found is None:
            return None, ("Azurite is not installed (neither .tools/azurite nor azurite on PATH; bash deploy/setup.sh "
                          "installs it)")
    if shutil.which("node") is None:
        return None, "node is not installed (Azurite runs on it; bash deploy/setup.sh installs both)"
    return found, ""


def _port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


@contextlib.contextmanager
def running_azurite(command: str, timeout: float = 60) -> Iterator[DemoAzurite]:
    """Azurite on three free loopback ports, in memory, until the block ends."""
    ports = (_port(), _port(), _port())
    env = {**os.environ, "AZURITE_ACCOUNTS": ";".join(f"{a}:{k}" for a, k in KEYS.items())}
    with tempfile.TemporaryDirectory(prefix="demo-azurite-") as work:
        args = [command, "--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--disableTelemetry",
                "--silent"]
        for service, port in zip(("blob", "queue", "table"), ports):
            args += [f"--{service}Host", HOST, f"--{service}Port", str(port)]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work, env=env)
        try:
            deadline = time.monotonic() + timeout
            for port in ports:
                while not _listening(port):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"Azurite did not start (exit code {proc.poll()})")
                    time.sleep(0.2)
            yield DemoAzurite(ports)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def fill_demo_account(azurite: DemoAzurite) -> None:
    """What a Function App leaves in its storage account, in miniature."""
    from azure.data.tables import TableServiceClient
    from azure.storage.blob import BlobServiceClient, ContentSettings
    from azure.storage.queue import QueueServiceClient

    cs = azurite.connection_string(SOURCE)
    hosts = BlobServiceClient.from_connection_string(cs).create_container("azure-webjobs-hosts")
    for name in ("OrdersTimer", "CleanupTimer", "ReportTimer"):
        hosts.upload_blob(f"timers/demo-app/{name}/status", b'{"Last":"2026-12-01T10:00:00Z"}',
                          content_settings=ContentSettings(content_type="application/json"),
                          metadata={"function": name})
    QueueServiceClient.from_connection_string(cs).create_queue("orders").send_message('{"order": 42}')
    TableServiceClient.from_connection_string(cs).create_table("DemoHistory").create_entity(
        {"PartitionKey": "instance-1", "RowKey": "0001", "EventType": "ExecutionStarted", "Sequence": 1})


def restore_into_new_account(store, keys, stamp: str, set_id: str, azurite: DemoAzurite, out) -> bool:
    """Restore the set's copy of the demo account into the second account; counts verified."""
    from workers.functions.client import open_account
    from workers.functions.restore import Restorer

    target = open_account(TARGET, azurite.connection_string(TARGET), retries=1, timeout=30)
    try:
        report = Restorer(store, target, keys=keys).run(stamp, set_id, SOURCE)
    finally:
        target.close()
    out(f"  functions: restored {SOURCE} into the new account {TARGET}: {report.containers} container(s), "
        f"{report.blobs} blob(s), {report.messages} message(s), {report.entities} entit(ies); "
        + ("counts verified" if report.ok else "PROBLEMS: " + "; ".join(report.problems)))
    return report.ok
