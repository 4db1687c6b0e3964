"""A set's Function Apps manifest of one account, read as hostile input: the whole manifest is read (which
verifies it against its record) and every line checked (:mod:`workers.functions.records`) into a private,
unlinked spool before a caller sees a single record:

* the first line names this account, stamp and set (a manifest copied to another set is refused), the last one
  counts what came between (a truncated manifest is refused);
* each blob, message and entity comes after the container, queue or table it belongs to;
* each blob lies inside one of this account's packs, within the pack's size (read from its record, signed when
  verify keys are configured).

A blob's bytes are then served from memory for a small blob of a small pack (its SHA-256 checked), else streamed
in pieces that the caller hashes. Used by the restore and by the drill's verification."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tempfile
from collections import OrderedDict
from typing import BinaryIO, Iterator

from workers.artifacts.service import ArtifactStore
from workers.functions.layout import account_prefix, manifest_key
from workers.functions.records import (COUNTED, MAX_LINE, AccountRecord, BlobRecord, EndRecord, ManifestError,
                                       Record, declares, parse)
from workers.runtime.errors import PermanentError
from workers.storage.codec import KeyRing

SLICE_MAX = 1 << 20         # a blob up to this size is served from memory
PACK_MEMORY = 64 << 20      # a pack is held decoded in memory for its small blobs only up to this size
BLOCK = 4 << 20             # the pieces of a streamed blob
DAMAGED = "The store holds a damaged copy; restore from another backup set."


def require(matches: bool, r: BlobRecord) -> None:
    if not matches:
        raise PermanentError(f"{r.what}: content does not match the manifest's SHA-256", hint=DAMAGED)


class PackReader:
    """The last few small packs read, decoded (each at most ``PACK_MEMORY``)."""

    def __init__(self, store: ArtifactStore, keys: KeyRing | None, keep: int = 2) -> None:
        self.store, self.keys, self.keep, self.cache = store, keys, keep, OrderedDict()

    def slice(self, key: str, offset: int, length: int) -> bytes:
        if key not in self.cache:
            out = io.BytesIO()
            self.store.get(key, out, keys=self.keys)
            self.cache[key] = out.getvalue()
            while len(self.cache) > self.keep:
                self.cache.popitem(last=False)
        return self.cache[key][offset:offset + length]


class CheckedManifest:
    """``with CheckedManifest(...) as m: for record in m.records(): ...``; ManifestError before the first."""

    def __init__(self, store: ArtifactStore, keys: KeyRing | None, stamp: str, set_id: str, account: str) -> None:
        self.store, self.keys = store, keys
        self.key, self.prefix = manifest_key(stamp, set_id, account), f"{account_prefix(stamp, account)}/packs/"
        self.whose = AccountRecord(account, stamp, set_id)
        self.packs = PackReader(store, keys)
        self.pack_sizes: dict[str, int] = {}    # pack key -> plaintext size, from its (checked) record
        self.counts: dict[str, int] = {}        # the end line's
        self.spool: BinaryIO | None = None

    def __enter__(self) -> "CheckedManifest":
        self.spool = tempfile.TemporaryFile()         # 0600, unlinked: the checked manifest, never by name
        try:
            self._check(self.spool)
        except BaseException:
            self.spool.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.spool is not None:
            self.spool.close()

    def records(self) -> Iterator[Record]:
        assert self.spool is not None, "use CheckedManifest in a with block"
        self.spool.seek(0)
        for n, line in enumerate(self.spool, 1):
            yield parse(json.loads(line), self.prefix, n)

    def pack_size(self, r: BlobRecord) -> int:
        """The plaintext size of the blob's pack, which exists and holds the blob's bytes."""
        sizes = self.pack_sizes
        if r.loc.pack not in sizes:
            rec = self.store.record(r.loc.pack)
            if rec is None:
                raise ManifestError(f"{r.what}: its pack {r.loc.pack} is not in the store")
            sizes[r.loc.pack] = rec.plaintext_size
        if r.loc.offset + r.loc.length > sizes[r.loc.pack]:
            raise ManifestError(f"{r.what}: lies beyond the end of its pack ({sizes[r.loc.pack]} bytes)")
        return sizes[r.loc.pack]

    def small(self, r: BlobRecord) -> bytes | None:
        """A small blob's bytes, checked against its SHA-256; None for one to stream (:meth:`pieces`)."""
        if r.loc.length > SLICE_MAX or self.pack_size(r) > PACK_MEMORY:
            return None
        data = self.packs.slice(r.loc.pack, r.loc.offset, r.loc.length)
        require(hashlib.sha256(data).hexdigest() == r.sha256, r)
        return data

    def check(self, r: BlobRecord) -> None:
        """Read a blob's bytes from its pack and check them against its SHA-256 (nothing kept)."""
        if self.small(r) is not None:
            return
        sha = hashlib.sha256()
        with self.pieces(r) as pieces:
            for piece in pieces:
                sha.update(piece)
        require(sha.hexdigest() == r.sha256, r)

    @contextlib.contextmanager
    def pieces(self, r: BlobRecord) -> Iterator[Iterator[bytes]]:
        """A blob's bytes in pieces of at most ``BLOCK``; the caller hashes them (:func:`require`)."""
        self.pack_size(r)
        with self.store.open_plain(r.loc.pack, keys=self.keys) as plain:
            yield _slice(plain, r.loc.offset, r.loc.length)

    def _check(self, spool: BinaryIO) -> None:
        declared: set[str] = set()
        seen = {kind: 0 for kind in COUNTED.values()}
        first = last = None
        with self.store.open_plain(self.key, keys=self.keys) as plain:
            for n, raw in enumerate((line for line in _lines(plain) if line.strip()), 1):
                try:
                    item = json.loads(raw)
                except ValueError:
                    raise ManifestError(f"Function Apps manifest line {n}: not JSON") from None
                record = parse(item, self.prefix, n)
                if (n == 1) != isinstance(record, AccountRecord) or last is not None:
                    raise ManifestError(f"Function Apps manifest line {n}: the account line must come first and "
                                        "the end line last")
                first = first or record
                if isinstance(record, EndRecord):
                    last = record
                    continue
                if isinstance(record, BlobRecord):
                    self.pack_size(record)
                kind, owner = declares(record)
                if owner is not None and owner not in declared:
                    raise ManifestError(f"Function Apps manifest line {n}: {kind} of {owner!r}, which no earlier "
                                        "line declares")
                if owner is None and not isinstance(record, AccountRecord):
                    declared.add(f"{kind}:{record.name}")  # type: ignore[union-attr]
                seen[kind] = seen.get(kind, 0) + 1
                spool.write(json.dumps(item, separators=(",", ":")).encode() + b"\n")
        if first != self.whose:
            raise ManifestError(f"the Function Apps manifest at {self.key} belongs to {first} instead of "
                                f"{self.whose}")
        found = {k: seen[kind] for k, kind in COUNTED.items()}
        if last is None or last.counts != found:
            raise ManifestError(f"the Function Apps manifest at {self.key} is incomplete: its end line "
                                f"{'is missing' if last is None else f'counts {last.counts}'}; found {found}")
        self.counts = found


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    """The lines of a stream, none longer than ``MAX_LINE`` (a longer one is refused, never held)."""
    rest = b""
    while chunk := stream.read(1 << 20):
        rest += chunk
        *lines, rest = rest.split(b"\n")
        for line in (*lines, rest):
            if len(line) > MAX_LINE:
                raise ManifestError(f"Function Apps manifest: a line longer than {MAX_LINE >> 20} MiB")
        yield from lines
    if rest:
        yield rest


def _slice(plain: BinaryIO, offset: int, length: int) -> Iterator[bytes]:
    """``length`` bytes from ``offset`` of a pack's plaintext, in pieces of at most ``BLOCK``; then the rest of
    the pack is read too, so its own hashes are checked when the stream closes."""
    skip = offset
    while skip:
        skip -= len(plain.read(min(skip, BLOCK)) or b"") or skip
    left = length
    while left:
        piece = plain.read(min(left, BLOCK))
        if not piece:
            raise ManifestError(f"the pack ends before the blob's {length} bytes")
        left -= len(piece)
        yield piece
    while plain.read(BLOCK):
        pass
