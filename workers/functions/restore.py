"""A Function Apps storage copy into a new account: containers and blobs (properties, metadata), queues and
their messages, tables and their entities; every blob's SHA-256 checked against the manifest before it is
written, then the target listed and counted against the manifest.

Fails closed: a target container that already holds blobs is refused (a restore goes to a *new* account)."""
from __future__ import annotations

import hashlib
import io
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.blob import ContentSettings

from workers.artifacts.service import ArtifactStore
from workers.functions import policies
from workers.functions.client import AccountClients, classify, translated
from workers.functions.entities import entity_of
from workers.functions.layout import manifest_key
from workers.runtime.errors import PermanentError
from workers.storage.codec import KeyRing

MANUAL_STEPS = """\
Manual steps (App Service does not do these for you):
  1. For each Function App that used the old account, set the application settings AzureWebJobsStorage and
     AzureWebJobsDashboard (and WEBSITE_CONTENTAZUREFILECONNECTIONSTRING if it pointed there) to the new
     account's connection string: Function App > Configuration > Application settings, or
     `az functionapp config appsettings set --name APP --resource-group RG --settings AzureWebJobsStorage=...`.
  2. Restart each Function App (once; restart again if the portal still shows storage errors after a minute).
  3. Check: the Functions list loads without a storage warning; timer triggers fire at their next slot
     (their schedule state was restored); queue-triggered functions pick up the restored messages; Durable
     Functions instances show their history (the TaskHub tables and control queues were restored); the
     Monitor tab shows new invocations. Messages in flight after the backup are not in the copy."""


@dataclass
class RestoreReport:
    containers: int = 0
    blobs: int = 0
    bytes: int = 0
    queues: int = 0
    messages: int = 0
    tables: int = 0
    entities: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class PackReader:
    """The last few small packs read, decoded (each at most a pack's size)."""

    def __init__(self, store: ArtifactStore, keys: KeyRing | None, keep: int = 2) -> None:
        self.store, self.keys, self.keep, self.cache = store, keys, keep, OrderedDict()

    def slice(self, key: str, offset: int, length: int) -> bytes:
        if key not in self.cache:
            out = io.BytesIO()
            self.store.get(key, out, keys=self.keys)
            self.cache[key] = out.getvalue()
            while len(self.cache) > self.keep:
                self.cache.popitem(last=False)
        return self.cache[key][offset:offset + length]


class _Checked(io.RawIOBase):
    """Passes a stream through, hashing it; ``check()`` compares with the manifest's SHA-256."""

    def __init__(self, raw, expected: str, what: str) -> None:
        self.raw, self.sha, self.expected, self.what = raw, hashlib.sha256(), expected, what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self.raw.read(len(buffer))
        buffer[:len(data)] = data
        self.sha.update(data)
        return len(data)

    def check(self) -> None:
        if self.sha.hexdigest() != self.expected:
            raise PermanentError(f"{self.what}: content does not match the manifest's SHA-256",
                                 hint="The store holds a damaged copy; restore from another backup set.")


class Restorer:
    def __init__(self, store: ArtifactStore, target: AccountClients, *, keys: KeyRing | None,
                 containers: Sequence[str] | None = None) -> None:
        self.store, self.target, self.keys = store, target, keys
        self.only = set(containers) if containers else None
        self.packs = PackReader(store, keys)
        self.report = RestoreReport()
        self.expected: dict[str, int] = {}      # container / "queue:" / "table:" -> count

    def run(self, stamp: str, set_id: str, account: str) -> RestoreReport:
        key = manifest_key(stamp, set_id, account)
        with self.store.open_plain(key, keys=self.keys) as plain:
            for line in io.TextIOWrapper(plain, encoding="utf-8"):
                if line.strip():
                    self._one(json.loads(line))
        self.verify()
        return self.report

    def _one(self, r: dict) -> None:
        kind, t, rep = r.get("t"), self.target, self.report
        if kind == "container" and self._wanted(r["name"]):
            client = t.blobs.get_container_client(r["name"])
            with translated(t.name, f"creating container {r['name']}"):
                try:
                    client.create_container(metadata=r.get("metadata") or None)
                except ResourceExistsError:
                    if next(iter(client.list_blobs(results_per_page=1)), None) is not None:
                        raise PermanentError(f"container {r['name']} already holds blobs in the target account",
                                             hint="Restore into a new, empty storage account (or delete the "
                                                  "container there first).") from None
            self._container_access(client, r)
            rep.containers += 1
            self.expected[r["name"]] = self.expected[f"snapshots:{r['name']}"] = 0
        elif kind == "blob" and self._wanted(r["container"]):
            self._blob(r)
        elif kind == "queue":
            with translated(t.name, f"creating queue {r['name']}"):
                try:
                    t.queues.create_queue(r["name"], metadata=r.get("metadata") or None)
                except ResourceExistsError:
                    pass
                if r.get("policies"):
                    t.queues.get_queue_client(r["name"]).set_queue_access_policy(policies.for_queue(r["policies"]))
            rep.queues += 1
            self.expected[f"queue:{r['name']}"] = 0
        elif kind == "message":
            with translated(t.name, f"sending a message to {r['queue']}"):
                t.queues.get_queue_client(r["queue"]).send_message(r["content"])
            rep.messages += 1
            self.expected[f"queue:{r['queue']}"] += 1
        elif kind == "table":
            with translated(t.name, f"creating table {r['name']}"):
                table = t.tables.create_table_if_not_exists(r["name"])
                if r.get("policies"):
                    table.set_table_access_policy(policies.for_table(r["policies"]))
            rep.tables += 1
            self.expected[f"table:{r['name']}"] = 0
        elif kind == "entity":
            with translated(t.name, f"writing an entity of {r['table']}"):
                t.tables.get_table_client(r["table"]).upsert_entity(entity_of(r))
            rep.entities += 1
            self.expected[f"table:{r['table']}"] += 1

    def _container_access(self, client, r: dict) -> None:
        """The container's public access level and stored access policies, as they were. An account that
        forbids public access refuses the level: a problem to report, the rest of the restore goes on."""
        if not (r.get("public_access") or r.get("policies")):
            return
        try:
            client.set_container_access_policy(policies.for_container(r.get("policies")),
                                               public_access=r.get("public_access"))
        except HttpResponseError as exc:
            if getattr(exc, "status_code", None) != 409:
                raise classify(exc, self.target.name, f"setting the access policy of container {r['name']}") \
                    from None
            self.report.problems.append(f"container {r['name']}: public access '{r.get('public_access')}' and "
                                        f"{len(r.get('policies') or [])} stored access polic(ies) refused by the "
                                        f"target account (HTTP 409 {exc.error_code}): set them by hand")

    def _wanted(self, container: str) -> bool:
        return self.only is None or container in self.only

    def _blob(self, r: dict) -> None:
        pack, offset, length = r["loc"]
        cs = dict(r["content_settings"])
        md5 = cs.pop("content_md5", None)
        settings = ContentSettings(**cs, content_md5=bytearray(bytes.fromhex(md5)) if md5 else None)
        what = f"blob {r['container']}/{r['name']}"
        client = self.target.blobs.get_blob_client(r["container"], r["name"])
        kw = {"blob_type": r.get("blob_type") or "BlockBlob", "content_settings": settings,
              "metadata": r.get("metadata") or None, "overwrite": True}
        rec = self.store.record(pack)
        if rec is not None and offset == 0 and rec.plaintext_size == length and length > (1 << 20):
            with self.store.open_plain(pack, keys=self.keys) as plain:       # a large blob: streamed
                checked = _Checked(plain, r["sha256"], what)
                with translated(self.target.name, f"writing {what}"):
                    client.upload_blob(io.BufferedReader(checked, 1 << 20), length=length, **kw)
                checked.check()
        else:
            data = self.packs.slice(pack, offset, length)
            if hashlib.sha256(data).hexdigest() != r["sha256"]:
                raise PermanentError(f"{what}: content does not match the manifest's SHA-256",
                                     hint="The store holds a damaged copy; restore from another backup set.")
            with translated(self.target.name, f"writing {what}"):
                client.upload_blob(data, length=length, **kw)
        if r.get("snapshot"):           # its content is now the blob's: keep it as a snapshot (taken now)
            with translated(self.target.name, f"snapshotting {what}"):
                client.create_snapshot(metadata=r.get("metadata") or None)
            self.expected[f"snapshots:{r['container']}"] += 1
        else:
            self.expected[r["container"]] += 1
        self.report.blobs += 1
        self.report.bytes += length

    def verify(self) -> None:
        """Count what the target holds against what was restored."""
        t = self.target
        for name, want in self.expected.items():
            with translated(t.name, f"counting {name}"):
                if name.startswith("queue:"):
                    got = t.queues.get_queue_client(name[6:]).get_queue_properties().approximate_message_count
                elif name.startswith("table:"):
                    got = sum(1 for _ in t.tables.get_table_client(name[6:]).list_entities(select=["RowKey"]))
                elif name.startswith("snapshots:"):
                    got = sum(1 for b in t.blobs.get_container_client(name[10:]).list_blobs(include=["snapshots"])
                              if b.snapshot)
                else:
                    got = sum(1 for _ in t.blobs.get_container_client(name).list_blobs())
            if got != want:
                self.report.problems.append(f"{name}: {got} in the target, {want} restored")
