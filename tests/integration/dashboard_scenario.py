"""The store and the settings behind test_dashboard_prometheus' recovery-point panels and alerts.

A signed local-directory store (the certificate and signing key of tests.integration.test_catalog_cli's Env)
holding, for stamp1:

* a set that completed (``COMPLETE_AGE`` old, it took ``SET_DURATION``): the newest recovery point, older than
  the short RPO objective (``RPO_OBJECTIVE``), so the RPO is breached;
* a newer set still waiting for its dump, older than the short set deadline (``SET_DEADLINE``): the real
  catalog expires it on its timer;
* a stored secrets version rotated at ``secrets_rotated_at()``; the scenario then sends a rotation one hour
  newer whose drop file does not exist, so the real secrets worker sees it and never handles it.

The real mirror worker gets a store of its own (:meth:`RecoveryPoints.mirror_site`): one complete set stored
``MIRROR_LAG`` ago on a primary its quota leaves ``MIRROR_FREE`` bytes of room in, and a mirror target nobody
answers for, so the target lags and the next set will not fit.
"""
from __future__ import annotations

import io
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from contracts import new_backup_set_id
from tests.fixtures import closed_port
from tests.integration.test_catalog_cli import PAYLOADS, Env
from tests.unit.certs import signed
from workers.artifacts.service import ArtifactStore
from workers.artifacts.setmanifest import artifact_key, write_manifest
from workers.artifacts.sets import Plan, write_marker, write_plan
from workers.secrets.versions import version_id, version_key
from workers.storage.local import LocalStore

STAMP = "stamp1"
RPO_OBJECTIVE = timedelta(hours=2)
SET_DEADLINE = timedelta(hours=1)
COMPLETE_AGE = timedelta(hours=3)
EXPIRING_AGE = timedelta(hours=2)
SET_DURATION = timedelta(minutes=20)
ROTATION_GAP = timedelta(hours=1)          # the rotation received but not handled, after the stored version
MIRROR_LAG = timedelta(hours=5)            # the mirror's set was stored this long ago; its target never answers
MIRROR_FREE = 1000                         # bytes of quota left on the mirror's primary


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def secrets_rotated_at(now: datetime) -> datetime:
    return now - timedelta(hours=4)


class RecoveryPoints:
    """The prepared store; ``settings()`` are the settings sections the catalog and secrets workers need."""

    def __init__(self, root: Path) -> None:
        root.mkdir()
        self.env = Env(root)
        self.drop = root / "drop"
        self.drop.mkdir()
        self.now = now = _now()
        self.complete_at = now - COMPLETE_AGE
        self.complete_id = self._set(self.complete_at, ("secrets",), complete=True)
        self.expiring_id = self._set(now - EXPIRING_AGE, ("databases",), complete=False)
        self.rotated_at = secrets_rotated_at(now)
        data = PAYLOADS[("secrets", "SystemSecrets.json")]
        self.env.store.put(version_key(STAMP, version_id(self.rotated_at, "ab" * 32)), lambda: io.BytesIO(data),
                           require_encryption=True)

    def _set(self, when: datetime, components: tuple[str, ...], *, complete: bool) -> str:
        store = self.env.store
        set_id = new_backup_set_id(when)
        write_plan(store.backend, Plan(STAMP, set_id, components, "schedule", when))
        if complete:
            for component in components:
                name, data = next((n, d) for (c, n), d in PAYLOADS.items() if c == component)
                store.put(artifact_key(STAMP, set_id, component, name), lambda d=data: io.BytesIO(d))
            write_manifest(store, STAMP, set_id)
            write_marker(store.backend, STAMP, set_id, {"requested_at": when.isoformat(),
                                                         "completed_at": (when + SET_DURATION).isoformat()})
        return set_id

    def settings(self) -> dict[str, dict]:
        env = self.env
        return {"store": {"kind": "local", "local_path": str(env.store_dir)},
                "encryption": {"certificate": str(env.cert), **env.signing},
                "retention": {"rpo_objective": f"{int(RPO_OBJECTIVE.total_seconds())}s",
                              "set_deadline": f"{int(SET_DEADLINE.total_seconds())}s", "set_check_interval": 1},
                "secrets": {"drop_path": str(self.drop)}}

    def missing_drop(self) -> str:
        """A drop path inside the drop location where no file was ever dropped."""
        return str(self.drop / "SystemSecrets-never-dropped.json")

    def mirror_site(self, root: Path) -> dict[str, str]:
        """The real mirror worker's settings (environment): its own signed local primary under ``root`` holding
        one complete set stored ``MIRROR_LAG`` ago, a quota ``MIRROR_FREE`` bytes above what it holds, and one S3
        mirror target ``dr-site`` that nobody answers for."""
        store = ArtifactStore(signed(LocalStore(root), self.env.root), compress=False)
        stored_at = _now() - MIRROR_LAG
        set_id = new_backup_set_id(stored_at)
        write_plan(store.backend, Plan(STAMP, set_id, ("databases",), "schedule", stored_at))
        store.put(artifact_key(STAMP, set_id, "databases", "db.bak"), lambda: io.BytesIO(b"x" * 100_000))
        write_marker(store.backend, STAMP, set_id, {"requested_at": stored_at.isoformat(),
                                                     "completed_at": (stored_at + SET_DURATION).isoformat()})
        for path in root.rglob("*"):
            os.utime(path, (stored_at.timestamp(), stored_at.timestamp()))
        used = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        target = {"name": "dr-site", "kind": "s3", "s3_endpoint": f"127.0.0.1:{closed_port()}", "s3_secure": False}
        return {"APPSVC_DR_STORE__KIND": "local", "APPSVC_DR_STORE__LOCAL_PATH": str(root),
                "APPSVC_DR_STORE__QUOTA_BYTES": str(used + MIRROR_FREE), "APPSVC_DR_MIRROR__TARGETS": json.dumps([target])}
