"""A recovery's record in the store, ``<stamp>/recoveries/<id>.json`` (signed like every stored object when a
signing key is configured; never secrets): the set, the targets, and each step's outcome, times and what its
verification found. It names where the databases, the share and the secrets go, so it is read back only with a valid
signature by a configured verify key (never unsigned, whatever ``allow_unsigned`` says). `recover run --resume ID`
reads it to skip what is done and still verifies; `recover status` and `recover report` print it. It is rewritten
after every step, so a killed run loses at most the step it ran."""
from __future__ import annotations

import hashlib
import io
import json
import logging
import secrets as random
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from workers.runtime.errors import PermanentError
from workers.storage.base import ObjectNotFound, StorageBackend
from workers.storage.signing import SIGNATURE_FIELD, SignatureError, canonical, sign_body, trust_of

log = logging.getLogger("appsvc_dr.recover")

PENDING, RUNNING, DONE, FAILED, MANUAL = "pending", "running", "done", "failed", "manual"
RECOVERIES = "recoveries"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class StepState:
    step_id: str
    kind: str
    status: str = PENDING
    started_at: str | None = None
    finished_at: str | None = None
    seconds: float | None = None       # measured duration of the last run of the step
    runs: int = 0                      # how many times it was executed (a skipped, verified step: unchanged)
    detail: str = ""
    error: str | None = None
    hint: str | None = None
    proof: dict = field(default_factory=dict)     # what verification found (rows, files, sha256...): re-checked


@dataclass
class Recovery:
    recovery_id: str
    stamp: str
    set_id: str
    created_at: str
    targets: dict
    steps: list[StepState]
    updated_at: str | None = None
    finished_at: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def step(self, step_id: str) -> StepState:
        for s in self.steps:
            if s.step_id == step_id:
                return s
        raise KeyError(step_id)

    def started(self, step_id: str) -> bool:
        """Whether this recovery already ran (part of) the step: its target holds our own work then."""
        try:
            return self.step(step_id).runs > 0
        except KeyError:
            return False

    def to_json(self) -> dict:
        return {"format": 1, "kind": "recovery", "recovery_id": self.recovery_id, "stamp": self.stamp,
                "backup_set_id": self.set_id, "created_at": self.created_at, "updated_at": self.updated_at,
                "finished_at": self.finished_at, "targets": self.targets, "steps": [asdict(s) for s in self.steps]}

    @classmethod
    def from_json(cls, data: dict) -> "Recovery":
        """From a state read back (signed, but still checked field by field: a wrong type is refused here, not
        met halfway through a resumed recovery); :class:`StateRefused` names the field."""
        if not isinstance(data.get("steps"), list) or not isinstance(data.get("targets"), dict):
            raise StateRefused("its steps must be a list and its targets an object")
        for name in ("recovery_id", "stamp", "backup_set_id", "created_at"):
            _typed(data, name, str)
        for name in ("updated_at", "finished_at"):
            _typed(data, name, (str, type(None)))
        return cls(data["recovery_id"], data["stamp"], data["backup_set_id"], data["created_at"],
                   _targets(data["targets"]), [_step(s) for s in data["steps"]], data.get("updated_at"),
                   data.get("finished_at"))


class StateRefused(PermanentError):
    default_hint = ("The recovery state does not hold what `recover run` writes; start a new recovery (`appsvc-dr "
                    "recover run` without --resume): steps whose targets already hold the data need --force.")

    def __init__(self, why: str) -> None:
        super().__init__(f"the recovery state is not one this tool wrote: {why}")


TEXT = (str, type(None))
STEP_FIELDS = {"step_id": str, "kind": str, "status": str, "started_at": TEXT, "finished_at": TEXT,
               "seconds": (int, float, type(None)), "runs": int, "detail": str, "error": TEXT, "hint": TEXT,
               "proof": dict}
TARGET_FIELDS = {"database_server": TEXT, "fileshare": TEXT, "fileshare_username": TEXT, "fileshare_port": int,
                 "secrets_out": TEXT, "out_dir": TEXT, "override_database_server": TEXT,
                 "override_content_share": TEXT, "controller_secrets": TEXT, "hosting_vss": bool, "skip": list,
                 "data_path": TEXT, "log_path": TEXT, "database_flags": (dict, type(None))}
STATUSES = (PENDING, RUNNING, DONE, FAILED, MANUAL)


def _typed(data: dict, name: str, kinds, *, required: bool = True) -> None:
    """``data[name]`` is one of ``kinds`` (a bool is no number here), or absent when not ``required``."""
    if name not in data and not required:
        return
    value, kinds = data.get(name), kinds if isinstance(kinds, tuple) else (kinds,)
    if not (bool in kinds if type(value) is bool else isinstance(value, kinds)):
        raise StateRefused(f"{name!r} is {type(value).__name__} {str(value)[:60]!r}")


def _step(data: object) -> StepState:
    if not isinstance(data, dict):
        raise StateRefused("a step is not an object")
    for name, kinds in STEP_FIELDS.items():
        _typed(data, name, kinds, required=name in ("step_id", "kind", "status"))
    if data["status"] not in STATUSES or data.get("runs", 0) < 0 or (data.get("seconds") or 0) < 0:
        raise StateRefused(f"step {data['step_id'][:60]!r} has status {data['status'][:20]!r}, runs "
                           f"{data.get('runs')!r}, seconds {data.get('seconds')!r}")
    return StepState(**{k: v for k, v in data.items() if k in STEP_FIELDS})


def _targets(data: dict) -> dict:
    for name, kinds in TARGET_FIELDS.items():
        _typed(data, name, kinds, required=False)
    if "fileshare_port" in data and not 0 < data["fileshare_port"] < 65536:
        raise StateRefused(f"'fileshare_port' is {data['fileshare_port']}")
    if not all(isinstance(c, str) for c in data.get("skip", [])):
        raise StateRefused("'skip' must list component names")
    return dict(data)


def new_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{random.token_hex(3)}"


def state_key(stamp: str, recovery_id: str) -> str:
    return f"{stamp}/{RECOVERIES}/{recovery_id}.json"


def save(backend: StorageBackend, recovery: Recovery) -> str:
    with recovery._lock:                    # steps running in parallel save through one lock
        recovery.updated_at = now()
        key = state_key(recovery.stamp, recovery.recovery_id)
        body = sign_body(backend, key, json.dumps(recovery.to_json(), indent=2, sort_keys=True).encode())
        backend.put(key, io.BytesIO(body), size=len(body))
        return key


def load(backend: StorageBackend, stamp: str, recovery_id: str) -> Recovery:
    key = state_key(stamp, recovery_id)
    try:
        with backend.open(key) as stream:
            data = json.loads(stream.read(4 * 1024 * 1024))
    except ObjectNotFound:
        raise PermanentError(f"no recovery {recovery_id} for stamp {stamp}",
                             hint="`appsvc-dr recover status --stamp STAMP` lists the recoveries.") from None
    except ValueError:
        data = None
    checked = _signed(backend, key, data) if isinstance(data, dict) else None
    if checked is None or checked.get("kind") != "recovery":
        raise PermanentError(f"the recovery state {key} is damaged, unsigned or forged",
                             hint="A recovery state is read only with a valid signature (it names where the "
                                  "databases, share and secrets go): configure the signing key "
                                  "(APPSVC_DR_ENCRYPTION__SIGNING_KEY) and its verify key, then start a new recovery "
                                  "(`appsvc-dr recover run` without --resume): steps whose targets already hold the "
                                  "data need --force.")
    return Recovery.from_json(checked)


def _signed(backend: StorageBackend, key: str, data: dict) -> dict | None:
    """``data`` without its signature when a configured verify key verifies it; None otherwise. Stricter than
    other reads: neither the lack of a verify key nor ``allow_unsigned`` (meant for legacy artifacts; a recovery
    state is never one) lets an unsigned state through."""
    trust = trust_of(backend)
    try:
        if trust.check(key, hashlib.sha256(canonical(data)).digest(), data.get(SIGNATURE_FIELD),
                       what="recovery state", required=True):
            return {k: v for k, v in data.items() if k != SIGNATURE_FIELD}
        log.warning("ignoring %s: a recovery state is never read unsigned", key)
    except SignatureError as exc:
        log.warning("ignoring %s: %s", key, exc.message)
    return None


def list_ids(backend: StorageBackend, stamp: str) -> list[str]:
    prefix = f"{stamp}/{RECOVERIES}/"
    return sorted(i.key[len(prefix):-5] for i in backend.list(prefix) if i.key.endswith(".json"))
