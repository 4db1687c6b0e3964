"""Drill results read from the store drive the "last restore drill" metric and its alert, the estimated RTO and
the set `recover` prefers: a marker that cannot be believed is ignored with a warning naming it: a future time
(an overdue drill would look fresh for ever), a "passed" over failed components, another stamp's or set's
result, absurd durations, naive times."""
from __future__ import annotations

import io
import json
import logging
from datetime import datetime, timedelta, timezone

import pytest

from workers.drill.results import (ComponentResult, DrillResult, estimated_rto, last_by_result, marker_key,
                                   read_markers, write_marker)
from workers.storage.local import LocalStore

STAMP, SET = "stamp1", "20261122T010000Z-0a1b2c3d"
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def result(drill_id: str, **changes) -> DrillResult:
    r = DrillResult(STAMP, SET, drill_id, NOW - timedelta(hours=2), finished_at=NOW - timedelta(hours=1),
                    components=[ComponentResult("secrets", "SystemSecrets.json", seconds=1.5),
                                ComponentResult("databases", "appservice_hosting", seconds=40.0)])
    for k, v in changes.items():
        setattr(r, k, v)
    return r


def put(backend, r: DrillResult, **fields) -> None:
    body = json.dumps({**r.to_json(), **fields}).encode()
    backend.put(marker_key(r), io.BytesIO(body), size=len(body))


@pytest.mark.parametrize("fields, why", [
    ({"finished_at": (NOW + timedelta(days=3650)).isoformat()}, "in the future"),
    ({"finished_at": (NOW - timedelta(hours=1)).replace(tzinfo=None).isoformat()}, "timezone-aware"),
    ({"started_at": NOW.isoformat()}, "out of order"),
    ({"result": "passed", "components": [{"component": "secrets", "result": "failed", "seconds": 1}]},
     "disagrees with its components"),
    ({"stamp": "stamp2"}, "not the one it is stored under"),
    ({"backup_set_id": "20261121T010000Z-0a1b2c3d"}, "not the one it is stored under"),
    ({"components": [{"component": "databases", "result": "passed", "seconds": 1e12}]}, "malformed"),
    ({"components": [{"component": "databases", "result": "passed", "seconds": "NaN"}]}, "malformed"),
    ({"components": "all of them"}, "not a list"),
])
def test_a_marker_that_cannot_be_believed_is_ignored_with_a_warning(tmp_path, caplog, fields, why):
    backend = LocalStore(tmp_path)
    genuine = result("aaaa1111")
    write_marker(backend, genuine)
    put(backend, result("bbbb2222", finished_at=NOW - timedelta(minutes=30)), **fields)
    with caplog.at_level(logging.WARNING):
        markers = read_markers(backend, STAMP)
    assert [m["drill_id"] for m in markers] == ["aaaa1111"]
    assert "bbbb2222" in caplog.text and why in caplog.text
    # So the metric and the estimate come from the genuine drill only
    assert last_by_result(markers) == {(STAMP, "passed"): genuine.finished_at.timestamp()}
    assert estimated_rto(markers) == 41.5
