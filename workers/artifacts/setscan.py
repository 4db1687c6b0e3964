"""How backup sets are found in the store: one listing of a stamp grouped by set (:class:`SetObjects`,
:func:`scan_sets`), and when a set was requested (:func:`set_time`). Their plans, markers and skip notes are
:mod:`workers.artifacts.sets`.

A backup set is a ``<stamp>/<X>/`` folder that holds one of the catalog's own files (plan, marker,
manifest) or whose name has the ``new_backup_set_id`` form. Other folders of a stamp — e.g.
``<stamp>/secrets/`` (secret versions) or ``<stamp>/fileshare-blobs/`` — are never treated as sets.

"Newest" is never decided by a name an outsider chose: a set dated (by its id or its plan) more than
``FUTURE_SKEW`` ahead of the clock is ignored, with a warning, by every reader that picks sets by age
(:func:`is_future`; events carrying such an id are already refused by the contracts).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterable

from contracts.envelope import SET_ID, is_future
from workers.artifacts.service import RECORD_SUFFIX
from workers.artifacts.sets import CATALOG_FILES, Plan, counts_of, id_time, parse_time
from workers.storage.base import ObjectInfo, StorageBackend


@dataclass
class SetObjects:
    """What one listing of a stamp says about one set: its objects, and which catalog files it has."""

    stamp: str
    set_id: str
    objects: list[ObjectInfo] = field(default_factory=list)

    @property
    def names(self) -> set[str]:
        return {o.key.split("/", 2)[2] for o in self.objects}

    @property
    def is_set(self) -> bool:
        return bool(SET_ID.match(self.set_id)) or any(n in self.names for n in CATALOG_FILES)

    @property
    def stored_counts(self) -> dict[str, int]:
        """Artifacts per component that this listing shows stored: ``<component>/<name>`` with its record
        ``<component>/<name>.record.json`` (a half-deleted artifact, one without the other, does not count)."""
        return self.counts()

    def counts(self, accept: Callable[[str], bool] | None = None) -> dict[str, int]:
        """:attr:`stored_counts`, counting only the artifacts whose key ``<stamp>/<set>/<component>/<name>``
        ``accept`` takes (e.g. those whose record verifies); ``accept`` is asked only about stored ones."""
        names = self.names
        stored = [name[:-len(RECORD_SUFFIX)] for name in names
                  if len(name.split("/")) == 2 and name.endswith(RECORD_SUFFIX) and name[:-len(RECORD_SUFFIX)] in names]
        prefix = f"{self.stamp}/{self.set_id}/"
        return counts_of(tuple(name.split("/")) for name in stored                    # type: ignore[misc]
                         if accept is None or accept(prefix + name))

    @property
    def newest_object(self) -> datetime | None:
        return max((o.modified for o in self.objects), default=None)


def scan_sets(backend: StorageBackend, stamp: str) -> dict[str, SetObjects]:
    """Every backup set of ``stamp`` with its objects, from one recursive listing of ``<stamp>/``."""
    groups: dict[str, SetObjects] = {}
    for info in backend.list(f"{stamp}/"):
        parts = info.key.split("/")
        if len(parts) >= 3:
            groups.setdefault(parts[1], SetObjects(stamp, parts[1])).objects.append(info)
    return {k: v for k, v in sorted(groups.items()) if v.is_set}


def dated_in_future(set_id: str, when: datetime | None, now: datetime | None = None) -> bool:
    """Whether a set's id or its time (:func:`set_time`) lies more than ``FUTURE_SKEW`` ahead of ``now``: such a
    set was named by someone who chose its date, and must never become the "newest" one."""
    return is_future(id_time(set_id), now) or is_future(when, now)


def set_time(set_id: str, plan: Plan | dict | None, marker: dict | None,
             objects: Iterable[ObjectInfo] = ()) -> datetime | None:
    """When the set was requested: ``requested_at`` of the plan (or the copy in the marker), else the time
    in the id, else when it completed, else its newest object; None if nothing tells."""
    planned = plan.requested_at if isinstance(plan, Plan) else parse_time((plan or {}).get("requested_at"))
    return (planned or parse_time((marker or {}).get("requested_at")) or id_time(set_id)
            or parse_time((marker or {}).get("completed_at")) or max((o.modified for o in objects), default=None))
