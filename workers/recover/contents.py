"""What a backup set holds for a recovery, read (and decrypted) once: its database artifacts, its file-share
snapshot's manifest and its secrets reference. Each read that fails (the key does not open the set, a signature
does not verify, a component is missing) becomes a :class:`Problem` with its fix instead of stopping the plan."""
from __future__ import annotations

from dataclasses import dataclass, field

from workers.artifacts import stripes
from workers.artifacts.logchain import is_log
from workers.artifacts.service import RECORD_SUFFIX, ArtifactStore
from workers.artifacts.setmanifest import read_set
from workers.engines.preflight import Problem
from workers.repository.manifest import Manifest
from workers.repository.repo import Repository
from workers.repository.snapshots import load_manifest, snapshot_of_set
from workers.runtime.errors import DrError, describe, hint_for
from workers.secrets.versions import set_reference
from workers.storage.codec import KeyRing
from workers.storage.signing import trust_of

SUFFIXES = {".dump": "postgres", ".bak": "sqlserver"}


@dataclass(frozen=True)
class DatabaseArtifact:
    database: str                   # the database name in the set
    key: str                        # its artifact (a striped backup: stripe 1)
    engine: str                     # postgres | sqlserver (by the artifact's suffix)
    size: int                       # plaintext bytes (every stripe)


@dataclass
class Contents:
    stamp: str
    set_id: str
    databases: list[DatabaseArtifact] = field(default_factory=list)
    snapshot: str | None = None
    manifest: Manifest | None = None
    secrets: dict | None = None     # the set's secrets reference {version_id, key, fingerprint}
    secrets_size: int | None = None
    functions_accounts: list[str] = field(default_factory=list)   # storage accounts of Function Apps in the set
    problems: list[Problem] = field(default_factory=list)

    @property
    def fileshare_size(self) -> int | None:
        return None if self.manifest is None else sum(e.size for e in self.manifest.entries if not e.is_dir)


def _problem(what: str, exc: Exception) -> Problem:
    return Problem(f"{what}: {describe(exc)}", hint_for(exc) or "See the error above.")


def load(store: ArtifactStore, keys: KeyRing, stamp: str, set_id: str, components: set[str],
         cache_dir=None) -> Contents:
    out = Contents(stamp, set_id)
    _check_signatures(store, stamp, set_id, out)
    backup_set = read_set(store, stamp, set_id)
    out.functions_accounts = sorted(a.key.rsplit("/", 1)[1].removesuffix(".jsonl") for a in backup_set.artifacts
                                    if a.key.split("/")[2] == "functions")
    if "databases" in components:
        found: dict[str, DatabaseArtifact] = {}
        for a in backup_set.artifacts:
            name = a.key.rsplit("/", 1)[1]
            if a.key.split("/")[2] != "databases" or is_log(name):   # log backups: applied by the restore
                continue
            base, index, _ = stripes.parse(name)         # x.bak.2of3 -> x.bak: one step for all stripes
            stem, dot, suffix = base.rpartition(".")
            before = found.get(stem)
            found[stem] = DatabaseArtifact(stem, a.key if before is None or index == 1 else before.key,
                                           SUFFIXES.get(dot + suffix, "unknown"),
                                           a.plaintext_size + (before.size if before else 0))
        out.databases.extend(found.values())
        if not out.databases:
            out.problems.append(Problem(f"backup set {set_id} has no database artifact", "Recover another set "
                                        "(--set ID) or leave the databases out (--skip databases)."))
    if "secrets" not in components and "fileshare" not in components and out.databases:
        _key_opens(store, keys, out.databases[0].key, out)   # nothing else would prove it before a restore
    if "secrets" in components:
        try:                                           # small and encrypted: proves the key opens the set
            out.secrets = set_reference(store, stamp, set_id, keys)
            record = store.record(out.secrets["key"])
            out.secrets_size = record.plaintext_size if record else None
        except (DrError, KeyError, ValueError) as exc:
            out.problems.append(_problem(f"the private key does not open the secrets of set {set_id}", exc))
    if "fileshare" in components:
        try:
            repo = Repository(store, stamp, cache_dir=cache_dir)
            out.snapshot = snapshot_of_set(repo, set_id)
            out.manifest = load_manifest(repo, out.snapshot, keys)
        except DrError as exc:
            out.problems.append(_problem(f"the file-share snapshot of set {set_id} cannot be read", exc))
    return out


def _key_opens(store: ArtifactStore, keys: KeyRing, key: str, out: Contents) -> None:
    """The key opens the artifact: its data key unwrapped and its first block decrypted (not the whole file)."""
    try:
        with store.open_plain(key, keys=keys) as plain:
            plain.read(1)
    except (DrError, KeyError, ValueError) as exc:
        out.problems.append(_problem(f"the private key does not open {key}", exc))


def _check_signatures(store: ArtifactStore, stamp: str, set_id: str, out: Contents) -> None:
    """Every artifact record of the set verifies with the configured verify key(s)."""
    trust = trust_of(store.backend)
    if not trust.verifies:
        out.problems.append(Problem("no verify key is configured: the set's signatures cannot be checked",
                                    "Set APPSVC_DR_ENCRYPTION__VERIFY_KEYS to the workers' public verify key "
                                    "(made by `appsvc-dr keys create-signing`)."))
        return
    records = [i.key[:-len(RECORD_SUFFIX)] for i in store.backend.list(f"{stamp}/{set_id}/")
               if i.key.endswith(RECORD_SUFFIX)]
    bad = [k for k in records if store.trusted_record(k) is None]
    if bad:
        out.problems.append(Problem(f"{len(bad)} of {len(records)} artifacts of set {set_id} do not verify with the "
                                    f"configured verify key(s), e.g. {bad[0]}",
                                    "Configure the verify key that matches the workers' signing key "
                                    "(APPSVC_DR_ENCRYPTION__VERIFY_KEYS), or recover another set."))
