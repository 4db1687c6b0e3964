"""How much room a store has: measured where the kind can tell (local: ``statvfs``; SMB:
``FileFsFullSizeInformation``), and/or bounded by a configured quota (the only way for S3, which reports no free
space): free = quota - bytes listed in the store."""
from __future__ import annotations

from dataclasses import dataclass

from workers.storage.base import StorageBackend


@dataclass(frozen=True)
class Space:
    free: int | None            # bytes that can still be written (None: the store cannot tell, no quota set)
    total: int | None
    used: int | None            # bytes the store's objects take (listed; only when a quota needs it)
    measured_by: str            # "statvfs", "FileFsFullSizeInformation", "quota", "volume+quota" or "unknown"


def measure(backend: StorageBackend, quota: int | None = None) -> Space:
    """The room left in ``backend``: the volume's free space where it reports one, capped by ``quota`` minus
    what the store holds (a full listing) when a quota is configured."""
    probe = getattr(backend, "free_space", None)
    free = total = None
    how = "unknown"
    if probe is not None:
        free, total = probe()
        how = "FileFsFullSizeInformation" if backend.name.startswith("smb:") else "statvfs"
    used = None
    if quota is not None:
        used = sum(info.size for info in backend.list(""))
        left = max(0, quota - used)
        free = left if free is None else min(free, left)
        total = quota if total is None else min(total, quota)
        how = "quota" if how == "unknown" else f"{how}+quota"
    return Space(free, total, used, how)
