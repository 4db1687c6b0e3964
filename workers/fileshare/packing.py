"""Packing inside the reader processes (SMB sources, when the store can be opened again in another process).

Each ``spawn``-started reader process reads, chunks and hashes its files (its own SMB session), packs the new
blobs, encodes the packs and uploads them itself (its own store client): content never crosses a pipe, and the
CPU of the whole path spreads over the processes. What crosses is small:

* :class:`~workers.fileshare.messages.Claim`: before encoding a pack, the process asks the sync which of its blobs
  are stored or claimed by another process already (answered on the process's own queue); it drops those from
  the pack, so a blob is stored once however many processes meet it (the sync's packer is the one arbiter);
* :class:`~workers.fileshare.messages.PackStored`: the pack id and its index records once the pack and its record
  are stored. The sync indexes them in batches, as it does its own packs; a reader process never writes the
  index, so one killed (or orphaned) loses nothing committed: at worst packs it stored that no index names,
  which prune reclaims.

Memory: a process's packer holds one pack filling and one being uploaded (``uploads=1``: the pack's encoded copy
only, its buffer is back for the next pack once encoded): its floor is ``packing_floor(pack_size)``, which the
sync takes out of the job's budget for each process.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Container, NamedTuple

from workers.artifacts.service import ArtifactStore
from workers.fileshare.messages import Claim, PackStored
from workers.repository.index import IndexEntry
from workers.repository.packer import Packer
from workers.repository.repo import Repository
from workers.runtime.errors import TransientError

CLAIM_TIMEOUT = 600.0               # seconds: the sync answers at once unless it is gone


class PackingSpec(NamedTuple):
    """What a reader process needs to pack and upload on its own (picklable; holds the store's secrets: never
    logged)."""
    opener: Callable[[], ArtifactStore]
    stamp: str
    target: int                     # the largest pack's plaintext


def process_packer(spec: PackingSpec, proc: int, known: Container[str], results: Any, answers: Any) -> Packer:
    """The packer of reader process ``proc``: claims through ``results`` (answered on ``answers``), reports stored
    packs through ``results``."""
    repo = Repository(spec.opener(), spec.stamp)
    asking = threading.Lock()

    def claim(blobs: list[IndexEntry]) -> list[str]:
        with asking:                                # one question at a time: answers come in order
            results.put(Claim(proc, blobs))
            try:
                return answers.get(timeout=CLAIM_TIMEOUT)
            except queue.Empty:
                raise TransientError("the sync did not answer a reader process's claim; the job is retried") \
                    from None

    def stored(pack: str, blobs: list[IndexEntry], stored_size: int, deduplicated: bool) -> None:
        results.put(PackStored(pack, blobs, stored_size, deduplicated))

    return Packer(repo, target=spec.target, uploads=1, known=known, claim=claim, on_stored=stored)
