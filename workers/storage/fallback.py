"""A read-only fallback over the primary store and its copies (mirror targets): every reader gets it.

:class:`FallbackStore` is a :class:`StorageBackend`. Writes and deletes go to the primary only (a recovery's
state, a drill's result): when the primary cannot take them the error says to pick one copy with ``--store NAME``
(never a silent write to a copy, which would split the state between stores). Reads try the
primary first and fall back to each copy in turn, logging a WARNING that names the copy and why, when the
primary cannot be reached, lost its bucket or object, refuses access, or holds bytes that fail verification:

* ``expected(backend, key)`` (given by the composition: the artifact record's stored size and SHA-256) names
  what an object's stored bytes must be. Such an object is hashed on the copy it is about to be read from
  before it is handed out (one extra read), so a corrupted object on the primary is read from a copy instead;
  the reader still verifies everything again as it decodes.
* ``list`` is the union of the primary's and the copies' listings (sorted, the primary's entry winning), so a
  set that is only on a copy is still found.

A read that fails half-way, after bytes were handed out, is not retried elsewhere: the reader's own
verification fails it, and ``--store NAME`` reads that copy alone.
"""
from __future__ import annotations

import contextlib
import hashlib
import heapq
import logging
from typing import BinaryIO, Callable, ContextManager, Iterator, Sequence

from workers.storage.base import (ExclusiveCreate, ObjectInfo, ObjectNotFound, StorageBackend, StorageError,
                                  StorageMisconfigured, StoragePermissionDenied, StorageUnavailable)

log = logging.getLogger("appsvc_dr.storage.fallback")
Expected = Callable[[StorageBackend, str], "tuple[int, str] | None"]   # (stored size, stored SHA-256) or None
CHUNK = 1024 * 1024
_FALL_BACK = (StorageUnavailable, StorageMisconfigured, StoragePermissionDenied, ObjectNotFound)
_CANNOT_WRITE = (StorageUnavailable, StorageMisconfigured, StoragePermissionDenied)


class VerificationFailed(StorageError):
    """The stored bytes on one copy do not match what the record says (only ever caught here)."""


class FallbackStore:
    def __init__(self, primary: StorageBackend, copies: Sequence[tuple[str, StorageBackend]], *,
                 expected: Expected | None = None) -> None:
        self.primary, self.copies, self.expected = primary, list(copies), expected
        self.name = primary.name
        self.atomic_rename = primary.atomic_rename

    def __repr__(self) -> str:
        return f"FallbackStore({self.name} -> {', '.join(n for n, _ in self.copies)})"

    def _candidates(self) -> list[tuple[str, StorageBackend]]:
        return [("primary", self.primary), *self.copies]

    # ---- writes: the primary only -------------------------------------------------------------------
    def put(self, key: str, stream: BinaryIO, size: int | None = None,
            metadata: dict[str, str] | None = None, *, sha256: str | None = None) -> ObjectInfo:
        with self._writing():
            return self.primary.put(key, stream, size, metadata, sha256=sha256)

    def delete(self, key: str) -> None:
        with self._writing():
            self.primary.delete(key)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except _CANNOT_WRITE as exc:
            exc.hint = (f"{exc.hint} This command writes to the primary store only (its reads fall back to the "
                        f"mirror targets); to work on one copy alone, e.g. after losing the primary site, run it "
                        f"with --store NAME ({', '.join(n for n, _ in self.copies)}).")
            raise

    def close(self) -> None:
        for _, backend in self._candidates():
            backend.close()

    # ---- reads: primary, then each copy ------------------------------------------------------------
    def _first(self, key: str, read: Callable[[StorageBackend], object]) -> object:
        problems: list[str] = []
        last: Exception | None = None
        for where, backend in self._candidates():
            try:
                result = read(backend)
            except (*_FALL_BACK, VerificationFailed) as exc:
                problems.append(f"{where}: {getattr(exc, 'message', exc)}")
                last = exc
                continue
            if problems:
                log.warning("read %s from mirror target %r (%s) because %s", key, where, backend.name,
                            "; ".join(problems))
            return result
        assert last is not None
        raise last  # every copy failed: the last copy's error (the primary's is logged above)

    def stat(self, key: str) -> ObjectInfo:
        return self._first(key, lambda b: b.stat(key))  # type: ignore[return-value]

    def exists(self, key: str) -> bool:
        """True when any copy that answers has ``key``."""
        for _, backend in self._candidates():
            with contextlib.suppress(*_FALL_BACK):
                if backend.exists(key):
                    return True
        return False

    def open(self, key: str) -> ContextManager[BinaryIO]:
        backend = self._first(key, lambda b: self._verified(b, key))
        return backend.open(key)  # type: ignore[union-attr]

    def _verified(self, backend: StorageBackend, key: str) -> StorageBackend:
        """``backend`` when its copy of ``key`` exists and its bytes are what the record says."""
        want = self.expected(backend, key) if self.expected is not None else None
        if want is None:
            backend.stat(key)                       # exists here (else fall back)
            return backend
        size, digest = 0, hashlib.sha256()
        with backend.open(key) as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        got = (size, digest.hexdigest())
        if got != want:
            raise VerificationFailed(f"{key} on {backend.name} fails verification (size {size}, SHA-256 "
                                     f"{got[1][:12]}…; the record says {want[0]} bytes, {want[1][:12]}…)")
        return backend

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        listings, problems = [], []
        for where, backend in self._candidates():
            try:
                listings.append(list(backend.list(prefix)))
            except _FALL_BACK as exc:
                problems.append(f"{where}: {exc.message}")
        if not listings:
            raise StorageUnavailable(f"no copy of the store could be listed: {'; '.join(problems)}")
        if problems:
            log.warning("listed %r without %s", prefix or "/", "; ".join(problems))
        return _union(listings)


def _union(listings: list[list[ObjectInfo]]) -> Iterator[ObjectInfo]:
    """Sorted by key, each key once (the first listing's entry: the primary's when it has one)."""
    seen = None
    for _, _, info in heapq.merge(*[[(i.key, n, i) for i in items] for n, items in enumerate(listings)]):
        if info.key != seen:
            seen = info.key
            yield info


class ExclusiveFallbackStore(FallbackStore):
    """A fallback over a primary that can create exclusively (``ExclusiveCreate``): ``put_new`` goes to it, so
    the capability is claimed exactly when the primary has it."""

    def put_new(self, key: str, body: bytes, metadata: dict[str, str] | None = None) -> ObjectInfo:
        with self._writing():
            return self.primary.put_new(key, body, metadata)  # type: ignore[attr-defined]


def with_copies(primary: StorageBackend, copies: Sequence[tuple[str, StorageBackend]],
                expected: Expected | None = None) -> StorageBackend:
    """``primary`` itself without copies, else a :class:`FallbackStore` over it and them."""
    if not copies:
        return primary
    kind = ExclusiveFallbackStore if isinstance(primary, ExclusiveCreate) else FallbackStore
    return kind(primary, copies, expected=expected)


__all__ = ["ExclusiveFallbackStore", "FallbackStore", "VerificationFailed", "with_copies"]
