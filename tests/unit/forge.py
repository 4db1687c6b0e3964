"""Test helper: file-share snapshots forged the way an attacker could, with write access to the store and the
public certificate only (manifests and packs are encrypted with the certificate: that proves nothing about who
wrote them). Also the hostile paths every restore target must refuse, with the rule each one breaks."""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

from workers.artifacts.service import ArtifactStore
from workers.config import Settings, load_settings
from workers.repository.index import IndexEntry
from workers.repository.manifest import EMPTY_SHA256, Entry
from workers.repository.repo import Repository

NS = 1_760_000_000_123_456_000
STAMP = "stamp1"
# path -> the words of the rule it breaks, as the refusal names it
TRAVERSALS = {
    "../escape.txt": "'..' component",
    "site/../../x": "'..' component",
    "a\\..\\b": "backslash",
    "C:x": "colon",
    "a\x00b": "NUL character",
    "a\x01b": "control character",
    "a\x7fb": "control character",
    "a" * 256: "longer than 255",
    "a//b": "empty component",
    ".": "'.' component",
    "site/./x": "'.' component",
    "site/": "empty component",
    "bad\udcff.txt": "lone surrogate",
}


def configured_store(settings: Settings | None = None) -> ArtifactStore:
    """The artifact store ``settings`` (default: the environment's APPSVC_DR_* settings) configure, built as the
    workers and the CLI build it."""
    settings = settings or load_settings()
    return ArtifactStore.from_settings(settings.store, settings.encryption, verify=settings.upload.verify)


def traversals(outside: Path) -> dict[str, str]:
    """Every traversal form, plus an absolute path aimed at ``outside``."""
    return {**TRAVERSALS, str(outside / "abs.txt"): "absolute path"}


def forge(store: ArtifactStore, snapshot: str, files: dict[str, bytes], dirs: tuple[str, ...] = (), *,
          lies: dict[str, bytes] | None = None, replace: bool = False) -> Repository:
    """Store a snapshot whose manifest lists ``dirs`` and ``files`` (path -> content) with no check at all.
    ``lies`` puts other bytes in the pack under a file's honest blob id (a blob that fails verification);
    ``replace`` overwrites a manifest already stored under ``snapshot`` (a genuine one: the attacker can write)."""
    repo = Repository(store, STAMP)
    body, index, entries = bytearray(), {}, [Entry(d, True, 0, NS, 0x10) for d in dirs]
    for path, data in files.items():
        blob = hashlib.sha256(data).hexdigest()
        stored = (lies or {}).get(path, data)
        if data and blob not in index:
            index[blob] = IndexEntry(blob, len(body), len(stored))
            body += stored
        entries.append(Entry(path, False, len(data), NS, 0x20, blob if data else EMPTY_SHA256,
                             (blob,) if data else ()))
    if body:
        pack, _ = repo.put_pack(bytes(body))
        repo.write_index({pack: list(index.values())})
    head = {"format": 2, "snapshot_id": snapshot, "stamp": STAMP, "backup_set_id": snapshot, "source": "forged",
            "created_at": "2026-12-02T00:00:00Z", "entries": [e.to_dict() for e in entries]}
    body = json.dumps(head).encode()                    # ASCII escapes: any string at all, lone surrogates too
    repo.data.put(repo.manifest_key(snapshot), lambda: io.BytesIO(body), replace_uncommitted=replace)
    return repo


def picture(root: Path) -> dict[str, tuple]:
    """Every name under ``root`` (links not followed): kind, and content for files, link target for links."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", Path(path).read_bytes(), os.stat(path).st_mtime_ns)
    return out


def partials(root: Path) -> list[str]:
    """Temporary restore files (``.NAME.appsvc-dr-partial``) left anywhere under ``root``."""
    from workers.repository.paths import PARTIAL
    return [os.path.join(d, n) for d, _, names in os.walk(root) for n in names if n.endswith(PARTIAL)]


def cli_restore(snapshot: str, target: str, key: Path, capsys, *extra: str) -> tuple[int, str]:
    """``appsvc-dr restore fileshare`` of ``snapshot`` into ``target``: (exit code, everything it printed)."""
    from workers.cli import main
    code = main(["restore", "fileshare", "--stamp", STAMP, "--snapshot", snapshot, "--target", target,
                 "--key", str(key), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def plan_set(backend, set_id: str, *components: str, stamp: str = STAMP) -> None:
    """Plan ``set_id`` as the catalog does on backup-due (an artifact is accepted only into a planned set)."""
    from workers.artifacts.sets import Plan, write_plan
    write_plan(backend, Plan(stamp, set_id, tuple(components), "manual", None))


def database_set(root: Path, set_id: str, source: str, name: str) -> tuple[Settings, ArtifactStore, Path]:
    """A local store under ``root`` holding the signed, complete set ``set_id`` whose artifact for database ``name``
    is a real pg_dump of ``source`` (left at ``root/source.dump``), with the settings of a worker restoring it
    (certificate, signing and verify keys, staging in ``root``). ``root`` holds cert.pem and key.pem already."""
    from tests.fixtures.postgres import PG_HOST, PG_PORT, PG_USER, pg_settings
    from tests.fixtures.rabbit import settings_for
    from tests.unit.certs import signing_settings
    from workers.artifacts.sets import write_marker
    from workers.engines.postgres import PostgresEngine
    settings = settings_for("unused", store={"kind": "local", "local_path": str(root / "store")},
                            encryption={"certificate": str(root / "cert.pem"), **signing_settings(root)},
                            staging={"database_dir": str(root / "staging")},
                            database={"engine": "postgres", "server": PG_HOST, "port": PG_PORT,
                                      "username": PG_USER, "databases": [name]})
    dump = root / "source.dump"
    PostgresEngine(pg_settings()).backup(source, str(dump))
    store = configured_store(settings)
    plan_set(store.backend, set_id, "databases")
    store.put(f"{STAMP}/{set_id}/databases/{name}.dump", lambda: open(dump, "rb"), hash_head=True)  # as uploaded
    write_marker(store.backend, STAMP, set_id, {"stamp": STAMP, "backup_set_id": set_id})
    return settings, store, dump
