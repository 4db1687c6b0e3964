"""The recovery plan's records: where each component goes (:class:`Targets`) and each step, in the documented
order (:class:`Step`): databases, file share, ReACL, secrets, the controller script, the controller (CN0-VM)
and the Function Apps."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from workers.engines.base import RestoreOptions

CONTROLLER_SECRETS = r"C:\AppServiceRecovery\SystemSecrets.json"
SCRIPT_NAME = "Restore-AppServiceController.ps1"
CHECKLIST_NAME = "recovery-checklist.md"
# step kinds, in the documented order
DATABASE, FILESHARE, REACL, SECRETS, SCRIPT, CONTROLLER, FUNCTIONS = (
    "database", "fileshare", "reacl", "secrets", "controller-script", "controller", "function-apps")
ORDER = (DATABASE, FILESHARE, REACL, SECRETS, SCRIPT, CONTROLLER, FUNCTIONS)


@dataclass(frozen=True)
class DatabaseFlags:
    """The database pre-flight overrides of `restore database`, each relaxing one refusal (all off: refuse rather
    than guess). Kept in the state file, so a resumed recovery restores the same way."""
    force_disconnect: bool = False          # SQL Server: end an ONLINE target's sessions (SINGLE_USER, ROLLBACK)
    tail_log_backup: bool = False           # SQL Server, in place: BACKUP LOG ... WITH NORECOVERY first, kept
    allow_database_mismatch: bool = False   # the backup holds another database than the set names / the target
    allow_no_checksum: bool = False         # SQL Server: a backup taken without page checksums

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> "DatabaseFlags":
        """From a state file (hostile: only the known names, only booleans)."""
        data = data if isinstance(data, dict) else {}
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if isinstance(data.get(k), bool)})

    def options(self, database: str | None, tail_log_dir: str | None) -> RestoreOptions:
        """A production restore's options for ``database`` of the set, relaxed by these flags only."""
        return RestoreOptions(expected_database=database, force_disconnect=self.force_disconnect,
                              allow_database_mismatch=self.allow_database_mismatch,
                              allow_no_checksum=self.allow_no_checksum,
                              tail_log_dir=tail_log_dir if self.tail_log_backup else None)

    def names(self) -> list[str]:
        """The command-line flags in force, e.g. ['--force-disconnect']."""
        return ["--" + k.replace("_", "-") for k, v in asdict(self).items() if v]


@dataclass
class Targets:
    """Where a recovery puts each component (None: not given; the pre-flight says what is missing)."""
    database_server: str | None = None           # shown only; the engine uses the (overridden) settings
    fileshare: str | None = None                 # \\server\share[\dir] or a local directory
    fileshare_username: str | None = None
    fileshare_password: str | None = field(default=None, repr=False)
    fileshare_port: int = 445
    fileshare_encrypt: bool = True
    secrets_out: Path | None = None              # SystemSecrets.json here, mode 0600
    out_dir: Path | None = None                  # the controller script and the checklist
    override_database_server: str | None = None  # Restore-AppServiceStamp -OverrideDatabaseServer
    override_content_share: str | None = None    # Restore-AppServiceStamp -OverrideContentShare
    controller_secrets: str = CONTROLLER_SECRETS  # SystemSecrets.json on CN0-VM
    hosting_vss: bool = False                    # App Service before 1.5: also stop/start HostingVssService
    skip: tuple[str, ...] = ()                   # components not recovered (secrets, databases, fileshare)
    data_path: str | None = None                 # SQL Server: MOVE data files here (as the server sees it)
    log_path: str | None = None                  # SQL Server: MOVE log files here
    database: DatabaseFlags = field(default_factory=DatabaseFlags)

    def to_json(self) -> dict:
        """What the state file keeps to resume (never the share password)."""
        return {"database_server": self.database_server, "fileshare": self.fileshare,
                "fileshare_username": self.fileshare_username, "fileshare_port": self.fileshare_port,
                "secrets_out": str(self.secrets_out) if self.secrets_out else None,
                "out_dir": str(self.out_dir) if self.out_dir else None,
                "override_database_server": self.override_database_server,
                "override_content_share": self.override_content_share,
                "controller_secrets": self.controller_secrets, "hosting_vss": self.hosting_vss,
                "skip": list(self.skip), "data_path": self.data_path, "log_path": self.log_path,
                "database_flags": self.database.to_json()}


@dataclass
class Step:
    step_id: str                  # "database:<name>", "fileshare", "reacl", ...
    kind: str                     # one of ORDER
    what: str                     # what it restores
    destination: str              # where it goes
    size: int | None = None       # bytes restored (None: nothing measured, e.g. a manual step)
    estimate: float | None = None  # seconds, from the last drill's throughput (None: unknown)
    manual: bool = False
    instructions: list[str] = field(default_factory=list)   # the manual part, line by line


def size_text(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def seconds_text(s: float | None) -> str:
    if s is None:
        return "unknown"
    return f"{s:.1f}s" if s < 120 else f"{s / 60:.1f} min"
