"""A Function Apps manifest written as the restore will read it: every line is checked by the same parser
(:mod:`workers.functions.records`) before it is written, so a backup never stores a manifest its own restore
refuses whole (one blob with a content-disposition past the limit, a metadata name the SDK accepts and the
checks do not, would otherwise make the whole account unrestorable, found only on the recovery day).

A line the restore would refuse is left out and named (:attr:`ManifestWriter.refused`, "<what>: <reason>"), and
so is every blob, message or entity of a container, queue or table left out; the end line counts what was
written, which is what the restore checks it against."""
from __future__ import annotations

import json
from typing import TextIO

from workers.functions.records import COUNTED, ManifestError, declares, parse


class ManifestWriter:
    """``emit(record)`` for the backup: checks and writes one manifest line (JSON), or leaves it out."""

    def __init__(self, out: TextIO, pack_prefix: str) -> None:
        self.out, self.prefix = out, pack_prefix
        self.lines = 0
        self.seen = {kind: 0 for kind in COUNTED.values()}
        self.refused: list[str] = []                  # "<what>: <reason>", every one
        self._left_out: set[str] = set()              # "container:<name>" etc. whose items go too

    def __call__(self, record: dict) -> None:
        try:
            parsed = parse(record, self.prefix, self.lines + 1)
        except ManifestError as exc:
            kind = str(record.get("t"))
            if kind in ("container", "queue", "table"):
                self._left_out.add(f"{kind}:{record.get('name')}")
            self.refused.append(f"{_what(record)}: {exc.message.split(': ', 1)[-1]}")
            return
        kind, owner = declares(parsed)
        if owner in self._left_out:
            self.refused.append(f"{_what(record)}: its {owner.split(':', 1)[0]} is left out")
            return
        self._write(record)
        if kind in self.seen:
            self.seen[kind] += 1

    def end(self) -> None:
        """The last line: how many of each kind were written."""
        self._write({"t": "end", **{key: self.seen[kind] for key, kind in COUNTED.items()}})

    def _write(self, record: dict) -> None:
        self.out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        self.lines += 1


def _what(record: dict) -> str:
    """The item a record stands for, as an operator finds it in the account (bounded)."""
    kind = str(record.get("t"))[:20]
    if kind == "blob":
        name = f"{record.get('container')}/{record.get('name')}"
    elif kind == "message":
        name = str(record.get("queue"))
    elif kind == "entity":
        props = record.get("props") if isinstance(record.get("props"), dict) else {}
        keys = [v[1] if isinstance(v, list) and len(v) == 2 else "?" for v in
                (props.get("PartitionKey"), props.get("RowKey"))]
        name = f"{record.get('table')} {str(keys[0])[:80]}/{str(keys[1])[:80]}"
    else:
        name = str(record.get("name"))
    return f"{kind} {name[:300]}"
