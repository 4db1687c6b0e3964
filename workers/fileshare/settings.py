"""``fileshare`` settings (``APPSVC_DR_FILESHARE__<FIELD>``): what to read, how hard, and how to pack it."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, model_validator

from workers.fileshare.budget import stream_cost
from workers.repository.budget import DEFAULT_PACK_SIZE, packing_floor

MiB = 1024 * 1024


class FileshareSettings(BaseModel, extra="forbid"):
    source: str = Field(default="", description=r"The App Service file share: \\server\share[\dir] (SMB) or an "
                        "absolute local path (a mounted share, the demo)")
    username: str | None = Field(default=None, description=r"SMB user, e.g. FileShareOwner, DOMAIN\user or "
                                                           "user@domain")
    password: SecretStr | None = None
    port: int = Field(default=445, ge=1, le=65535)
    encrypt: bool = Field(default=True, description="Require SMB 3 encryption of the traffic")
    transfers: int = Field(default=8, ge=1, le=64, description="Files read at once (across processes)")
    processes: int = Field(default=0, ge=0, le=16, description="Reader processes for SMB sources; 0 = two when "
                           "they pack and upload themselves (a store built from settings, as the worker's is), else "
                           "one (each costs ~40-75 MiB besides its share of the memory budget: more can take the "
                           "worker's process tree past 300 MiB). Local sources read with threads in the worker "
                           "process")
    reader_packing: bool = Field(default=False, description="Reader processes pack, encode and upload what "
                                 "they read themselves (SMB sources; the worker's store, built from settings): "
                                 "content never crosses a pipe and the whole path spreads over `processes` (0: two) "
                                 "processes. Each holds its own pack and upload (2 x pack_size of the memory "
                                 "budget) and ~60 MiB of its own: with 16 MiB packs the process tree exceeds "
                                 "300 MiB (docs/performance.md)")
    uploads: int = Field(default=2, ge=1, le=16, description="Packs uploaded at once")
    retries: int = Field(default=3, ge=0, description="Retries of a locked / denied file (like robocopy /R)")
    wait: float = Field(default=5.0, ge=0, description="Seconds between those retries (like robocopy /W)")
    reread: int = Field(default=2, ge=0, description="Re-reads of a file that changed while it was read")
    fail_on_skipped: bool = Field(default=False, description="Fail the job (instead of a partial snapshot and a "
                                  "warning) when files had to be skipped")
    pack_size: int = Field(default=DEFAULT_PACK_SIZE, ge=MiB, le=256 * MiB, description="Largest pack object; keep it at "
                           "or below APPSVC_DR_STORE__S3_PART_SIZE so a pack is one S3 part")
    chunk_avg: int = Field(default=MiB, ge=64 * 1024, le=4 * MiB, description="Average chunk of a large file "
                           "(content-defined; min avg/4, max avg*4)")
    memory_budget: int = Field(default=112 * MiB, ge=32 * MiB, description="Bytes of file content one sync may "
                               "hold at once: reads in flight, packs being filled and uploaded (see "
                               "workers/fileshare/budget.py). With the defaults the worker process peaks near "
                               "70 MiB + this")
    cache_dir: Path = Field(default=Path("~/.cache/appsvc-dr/fileshare"), description="Worker-local cache of "
                            "the last manifest and the index (makes incremental runs cheap when manifests "
                            "are encrypted)")

    @model_validator(mode="after")
    def _packs_hold_chunks(self) -> "FileshareSettings":
        if self.pack_size < self.chunk_avg * 4:
            raise ValueError("pack_size must be at least 4 × chunk_avg (the largest chunk)")
        least = packing_floor(self.pack_size) + stream_cost(self.chunk_avg * 4)
        if self.memory_budget < least:
            raise ValueError(f"memory_budget must be at least {least // MiB} MiB with this pack_size and chunk_avg "
                             "(a pack filling, one uploading, one large file read): raise it or lower pack_size")
        return self
