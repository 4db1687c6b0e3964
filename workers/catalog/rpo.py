"""Recovery-point metrics of the catalog, rebuilt from the store (never reset by a restart).

After every scan of a stamp (at start, on the set-deadline timer, after a set completes, fails or expires):

* ``appsvc_dr_newest_complete_set_timestamp_seconds{stamp}`` — the time (``requested_at``) of the newest
  complete set: the recovery point. ``time() - it`` is the RPO now; the alert compares it with the objective.
* ``appsvc_dr_backup_sets{stamp,state}`` — sets in the store per state (planned, in-progress, complete,
  failed, expired), every state present from the first scan (0 when none).
* ``appsvc_dr_backup_sets_unresolved{stamp,state}`` — failed / expired sets newer than the newest complete
  set: no later recovery point covers them (the alert fires until one does).
* ``appsvc_dr_set_duration_seconds{stamp}`` — request-to-complete time of the newest complete set.
* ``appsvc_dr_set_deadline_timestamp_seconds{stamp}`` — the nearest deadline of an open set (absent: none).
* ``appsvc_dr_rpo_objective_seconds{stamp}`` — ``RETENTION__RPO_OBJECTIVE``, so the RPO alert reads the
  objective configured here instead of a constant in the rules.

The newest secrets version's time, ``appsvc_dr_secrets_newest_version_timestamp_seconds{stamp}`` (the secrets
worker's gauge), is also set by the catalog (:class:`SecretsAge`): at start and after every ``secrets-stored``,
read from the store with the reader the composition hands in (the catalog does not import the secrets worker).
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Callable

from prometheus_client import CollectorRegistry, Gauge

from workers.artifacts.lifecycle import EXPIRED, FAILED, OPEN_STATES, STATES, SetStatus, newest_complete
from workers.artifacts.service import ArtifactStore
from workers.runtime.errors import DrError

log = logging.getLogger("appsvc_dr.catalog")
NewestSecrets = Callable[[ArtifactStore, str], "datetime | None"]   # (store, stamp) -> newest version's rotation


class SetMetrics:
    def __init__(self, registry: CollectorRegistry, rpo_objective: float | None = None) -> None:
        self.rpo_objective = rpo_objective
        self.objective = Gauge("appsvc_dr_rpo_objective_seconds", "The recovery point objective "
                               "(RETENTION__RPO_OBJECTIVE): the newest complete set may be at most this old",
                               ["stamp"], registry=registry)
        self.newest = Gauge("appsvc_dr_newest_complete_set_timestamp_seconds", "Unix time (requested_at) of the "
                            "newest complete backup set of a stamp, read from the store", ["stamp"],
                            registry=registry)
        self.sets = Gauge("appsvc_dr_backup_sets", "Backup sets in the store by lifecycle state",
                          ["stamp", "state"], registry=registry)
        self.unresolved = Gauge("appsvc_dr_backup_sets_unresolved", "Failed or expired backup sets newer than "
                                "the newest complete set of a stamp", ["stamp", "state"], registry=registry)
        self.duration = Gauge("appsvc_dr_set_duration_seconds", "Seconds from request to completion of the "
                              "newest complete backup set", ["stamp"], registry=registry)
        self.deadline = Gauge("appsvc_dr_set_deadline_timestamp_seconds", "Unix time of the nearest deadline of "
                              "an open (planned or in-progress) backup set", ["stamp"], registry=registry)

    def __call__(self, stamp: str, sets: list[SetStatus]) -> None:
        if self.rpo_objective is not None:
            self.objective.labels(stamp).set(self.rpo_objective)
        for state in STATES:
            self.sets.labels(stamp, state).set(sum(s.state == state for s in sets))
        newest = newest_complete(sets)
        since = newest.requested_at if newest is not None else None
        for state in (FAILED, EXPIRED):
            self.unresolved.labels(stamp, state).set(sum(
                s.state == state and (since is None or (s.requested_at is not None and s.requested_at > since))
                for s in sets))
        if newest is not None and newest.requested_at is not None:
            self.newest.labels(stamp).set(newest.requested_at.timestamp())
            if newest.duration is not None:
                self.duration.labels(stamp).set(newest.duration)
        deadlines = [s.deadline for s in sets if s.state in OPEN_STATES and s.deadline]
        if deadlines:
            self.deadline.labels(stamp).set(min(deadlines).timestamp())
        else:
            try:
                self.deadline.remove(stamp)
            except KeyError:      # never set for this stamp
                pass


class SecretsAge:
    """Sets the newest-secrets gauge of a stamp from the store (one listing of ``<stamp>/secrets/``)."""

    def __init__(self, gauge: Gauge, newest: NewestSecrets, store: ArtifactStore) -> None:
        self.gauge, self.newest, self.store = gauge, newest, store

    def refresh(self, stamp: str) -> None:
        try:
            when = self.newest(self.store, stamp)
        except DrError as exc:
            log.warning("cannot read the secrets versions of %s: %s", stamp, exc.message)
            return
        if when is not None:
            self.gauge.labels(stamp).set(when.timestamp())
