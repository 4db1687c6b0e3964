"""The Function Apps manifest writer checks every line as the restore will: what the restore would refuse is left
out and named, with everything that belongs to a container, queue or table left out, and the end line counts
what was written, so the restore's own count check passes."""
from __future__ import annotations

import io
import json

from workers.functions.records import COUNTED, EndRecord, declares, parse
from workers.functions.writing import ManifestWriter

PACKS = "stamp1/functions-blobs/acct/packs/"


def blob(container: str, name: str, **extra) -> dict:
    return {"t": "blob", "container": container, "name": name, "sha256": "ab" * 32, "size": 3,
            "loc": [PACKS + "0" * 32, 0, 3], "etag": "e", **extra}


def test_refused_lines_and_their_items_are_left_out_and_the_end_line_counts_what_was_written():
    out = io.StringIO()
    emit = ManifestWriter(out, PACKS)
    emit({"t": "account", "format": 1, "name": "acct", "stamp": "stamp1", "backup_set_id": "set-1"})
    emit({"t": "container", "name": "good", "metadata": {}, "public_access": None, "policies": []})
    emit(blob("good", "a.txt"))
    emit(blob("good", "b.txt", content_settings={"content_disposition": "x" * 1025}))   # refused
    emit({"t": "container", "name": "bad", "metadata": {"not a name": "v"}, "public_access": None, "policies": []})
    emit(blob("bad", "c.txt"))                                                             # its container is out
    emit({"t": "queue", "name": "q-1", "metadata": {}, "policies": []})
    emit({"t": "message", "queue": "q-1", "content": "m" * (64 * 1024 + 1)})              # refused
    emit({"t": "message", "queue": "q-1", "content": "ok"})
    emit.end()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    records = [parse(item, PACKS, n) for n, item in enumerate(lines, 1)]
    seen = {kind: 0 for kind in COUNTED.values()}
    for r in records[1:-1]:
        seen[declares(r)[0]] += 1
    assert isinstance(records[-1], EndRecord)
    assert records[-1].counts == {key: seen[kind] for key, kind in COUNTED.items()} == \
        {"containers": 1, "blobs": 1, "queues": 1, "messages": 1, "tables": 0, "entities": 0}
    assert [r.split(":")[0] for r in emit.refused] == ["blob good/b.txt", "container bad", "blob bad/c.txt",
                                                       "message q-1"]
    assert "its container is left out" in emit.refused[2] and "64 KiB" in emit.refused[3]
