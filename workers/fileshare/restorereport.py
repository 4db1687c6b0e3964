"""What a restore reports: the counts, every path it could not restore (with why and how to fix it), the conflicts
it resolved by a rule, and the paths restored under another name; and what the operator does next (``REACL``)."""
from __future__ import annotations

from dataclasses import dataclass, field

from workers.fileshare.restoreplan import READONLY_HINT, Plan

REACL = ("On the file server, in an elevated command prompt, run ReACL.cmd from the BCDR folder of the App "
         "Service installation files, so the restored content gets the ACLs App Service expects; then go on with "
         "the controller steps (Restore-AppServiceStamp, Restore-AppServiceRoles, Sync-AppServiceObject).")
HINTS = {"locked": "Close the program holding it (or stop the site) and run the same restore again.",
         "denied": "Give the restoring account write access to it (or clear read-only), then restore again.",
         "vanished": "Something removed a directory it goes into meanwhile; run the same restore again.",
         "changed": "Run the same restore again.",
         "readonly": READONLY_HINT,
         "integrity": "The repository is damaged for this file: restore it from another snapshot.",
         "verify": "Something changed it after it was written; run the same restore again."}


@dataclass(frozen=True, slots=True)
class Failure:
    path: str
    reason: str
    hint: str


@dataclass
class RestoreReport:
    dirs: int = 0
    files_restored: int = 0
    files_identical: int = 0
    bytes_written: int = 0
    failed: list[Failure] = field(default_factory=list)
    resolved: list[Failure] = field(default_factory=list)      # conflicts resolved by a rule (what was done)
    renamed: list[Failure] = field(default_factory=list)       # restored under another name (case collisions)
    plan: Plan | None = None

    @property
    def exact(self) -> bool:
        """Whether the target now holds the selection exactly (else the run exits 1)."""
        return not self.failed and not self.renamed
