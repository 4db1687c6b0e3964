"""The mirror worker: on every sign of new objects in a stamp (``artifact-stored``, ``secrets-stored``,
``fileshare-synced``, ``backup-set-completed``) each mirror target is brought in line with the primary for that
stamp (``workers.mirror.sync``) and ``artifact-mirrored`` says so, per target.

Idempotent and resumable: every run compares listings and copies only what a target lacks, so a redelivered
event finds nothing to do and a run cut short is finished by the next. A target that is down fails the job
with a transient error after the other targets are done: it is retried with backoff for ``retry_for`` (the
backlog is caught up when the target returns; any later event catches it up too). Metrics per target:
``appsvc_dr_mirror_backlog`` (objects missing) and ``appsvc_dr_mirror_lag_seconds`` (how long the oldest
missing object has waited; 0 when caught up). Once a set completed and was copied, each target's own
retention is applied to it (``retention.auto``; ``keep_last`` / ``keep_within`` per target), skipping objects
under S3 Object Lock. Where verify keys are configured (``APPSVC_DR_ENCRYPTION__…``, the worker's Trust on the
primary and every target), only signed plans, markers, records, summaries and indexes decide a deletion: one
that does not verify is logged and never deletes anything (objects are still copied as stored). Before each set
(``backup-due``) and after it, every store's capacity is measured and forecast (``workers.mirror.capacity``): a
set that will not fit is warned about before it fails.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from contracts import ArtifactStored, BackupDue, BackupSetCompleted, Envelope, FileshareSynced, SecretsStored
from contracts.events.mirror import ArtifactMirrored, ArtifactMirroredPayload
from workers.artifacts.jobs import follow_up
from workers.artifacts.retention import apply_retention
from workers.artifacts.sets import stamp_index_key, stored_stamps
from workers.artifacts.settings import RetentionSettings
from workers.middleware.metrics import Metrics
from workers.mirror.capacity import CapacityWatch, Watched
from workers.mirror.settings import MirrorSettings, MirrorTarget
from workers.mirror.scope import event_scope
from workers.mirror.shared import apply_target
from workers.mirror.sync import Budget, Policy, PrimaryView, SyncResult, lag_seconds, sync, wanted_objects
from workers.runtime.errors import ConfigurationError, TransientError
from workers.runtime.worker import JobContext, WorkerSpec
from workers.storage.base import (ObjectInfo, StorageBackend, StorageError, StorageMisconfigured, StoragePermissionDenied,
                                  StorageUnavailable)
from workers.storage.factory import build_store
from workers.storage.settings import EncryptionSettings, StoreSettings
from workers.storage.signing import attach, trust_from_settings

WORKER = "mirror"
log = logging.getLogger("appsvc_dr.mirror")


class MirrorGauges:
    """The per-target gauges (``Metrics.mirror_lag`` / ``mirror_backlog``; fresh ones when none are given)."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        metrics = metrics or Metrics()
        self.lag, self.backlog = metrics.mirror_lag, metrics.mirror_backlog

    def set(self, target: str, result: SyncResult) -> None:
        self.backlog.labels(target).set(len(result.backlog))
        self.lag.labels(target).set(lag_seconds(result.lag_since))


def policy_for(target: MirrorTarget, retention: RetentionSettings) -> Policy:
    """The target's own retention (keep_last / keep_within), the retention section's where it sets none."""
    return Policy(keep_last=retention.keep_last if target.keep_last is None else target.keep_last,
                  keep_within=target.keep_within if target.keep_within is not None else retention.keep_within,
                  grace=retention.grace)


def target_store(target: MirrorTarget) -> StorageBackend:
    return build_store(target.store_settings())


@dataclass
class Target:
    settings: MirrorTarget
    backend: StorageBackend
    policy: Policy


class MirrorHandler:
    def __init__(self, primary: StorageBackend, targets: list[Target], retry_for, gauges: MirrorGauges, *,
                 auto_retention: bool = False, capacity: CapacityWatch | None = None,
                 catch_up: Budget | None = None) -> None:
        self.primary, self.targets, self.retry_for, self.gauges = primary, targets, retry_for, gauges
        self.auto_retention, self.capacity = auto_retention, capacity
        self.budget = catch_up or Budget(objects=500, bytes=8 << 30)
        self.caught_up: dict[str, datetime] = {}       # target -> when its last run left nothing missing
        self.pending: dict[str, dict[str, ObjectInfo]] = {}   # target -> missing at its last full reconciliation
        self.stamps: set[str] = set()                  # stamps events named (the timer also reads the stamp index)
        self.lock = threading.Lock()                   # the timer's reconciliation and a job never copy at once
        self.suspect: set[str] = set()                 # targets found down: the next event reconciles its stamp
        self.denied: set[str] = set()                  # targets whose key may not delete (told once)
        self.old_after = min((t.policy.grace for t in targets), default=timedelta(hours=6))
        for target in targets:                          # exported at 0 from the start
            self.gauges.backlog.labels(target.settings.name)
            self.gauges.lag.labels(target.settings.name)

    def before_set(self, event: BackupDue, ctx: JobContext) -> list[Envelope]:
        """Before a set: will it fit in every store?"""
        return self.capacity.check(event, "before") if self.capacity is not None else []

    def __call__(self, event: Envelope, ctx: JobContext) -> list[Envelope]:
        """Copy what the event names (its set, its repository folder) to every target; an event that names
        nothing usable, or an old set, reconciles the whole stamp, and so does the first event a target gets
        after it was found down (an outage may have lost anything, e.g. a server back empty)."""
        self.stamps.add(event.stamp)
        scope = event_scope(event, self.old_after)
        with self.lock:
            return self._handle(event, ctx, scope)

    def _handle(self, event: Envelope, ctx: JobContext, scope: tuple[str, ...] | None) -> list[Envelope]:
        out: list[Envelope] = []
        down: list[str] = []
        scoped = PrimaryView(self.primary, event.stamp, scope=scope)   # the primary is listed once per event
        whole: PrimaryView | None = None
        for target in self.targets:
            name, started = target.settings.name, time.monotonic()
            view = scoped
            if scope is not None and name in self.suspect:   # back from an outage: it may have lost anything
                view = whole = whole or PrimaryView(self.primary, event.stamp)
            try:
                result = sync(self.primary, target.backend, event.stamp, target.policy,
                              progress=lambda n, kind=f"mirrored-{name}": ctx.progress(kind, n),
                              cancelled=ctx.cancelled.is_set, report=lambda r, t=name, v=view: self._report(t, v, r),
                              view=view)
            except (StorageUnavailable, StorageMisconfigured) as exc:
                ctx.logger.warning("mirror target %s (%s) is unavailable: %s", name, target.backend.name,
                                   exc.message)
                down.append(f"{name}: {exc.message}")
                self.suspect.add(name)
                self._estimate(target, [view])
                continue
            self.suspect.discard(name)
            for key in result.corrupt:
                ctx.logger.error("not mirrored to %s: %s fails verification on the primary (the target keeps any "
                                 "earlier copy)", name, key)
            ctx.logger.info("mirror %s: %d of %d objects copied (%d bytes), %d missing%s", name, result.copied,
                            result.wanted, result.bytes_copied, len(result.backlog),
                            f" (of {', '.join(view.prefixes)})" if view.scope else "")
            if isinstance(event, BackupSetCompleted) and self.auto_retention:
                self._retention(target, event.stamp, ctx.logger)
            out.append(follow_up(event, ArtifactMirrored, ArtifactMirroredPayload(
                target=name, store=target.backend.name, objects=result.wanted, copied=result.copied,
                bytes_copied=result.bytes_copied, backlog=len(result.backlog),
                duration_seconds=round(time.monotonic() - started, 3)), source=f"worker:{WORKER}", part=name))
        if isinstance(event, BackupSetCompleted) and self.capacity is not None:
            out += self.capacity.check(event, "after")
        if down:
            raise TransientError(f"mirror target(s) down: {'; '.join(down)}", until=event.occurred_at + self.retry_for,
                                 hint="Retried with backoff until the target is back (the backlog is caught up "
                                      "then, by the retry or the worker's timer); check the target's address and "
                                      "that it is up.")
        return out

    def _report(self, name: str, view: PrimaryView, result: SyncResult) -> None:
        """The gauges after a run: what this run left missing, and (after a run of one event's scope) what the
        last full reconciliation found missing outside that scope."""
        pending = self.pending.setdefault(name, {})
        if view.scope is None:
            for key in [k for k in pending if k.startswith(f"{view.stamp}/") or k == stamp_index_key(view.stamp)]:
                del pending[key]
        else:
            for key in [k for k in pending if k.startswith(view.prefixes)]:
                del pending[key]
        pending.update((o.key, o) for o in result.backlog)
        if not pending:
            self.caught_up[name] = datetime.now(timezone.utc)
        self.gauges.set(name, SyncResult(0, backlog=list(pending.values())))

    def catch_up(self) -> list[Envelope]:
        """The timer: reconcile every known stamp with each target, copying at most the tick's budget; then
        each caught-up target's own retention. Nothing to publish: the gauges and the log tell."""
        budget = replace(self.budget)
        with self.lock:
            try:
                self.stamps |= stored_stamps(self.primary)
            except StorageError as exc:
                log.warning("mirror catch-up: the primary's stamp index cannot be read: %s",
                            getattr(exc, "message", exc))
            views = [PrimaryView(self.primary, stamp) for stamp in sorted(self.stamps)]
            for target in self.targets:
                self._catch_up(target, views, budget)
        return []

    def _catch_up(self, target: Target, views: list[PrimaryView], budget: Budget) -> None:
        name = target.settings.name
        copied = 0
        for view in views:
            try:
                result = sync(self.primary, target.backend, view.stamp, target.policy, view=view, budget=budget,
                              report=lambda r, v=view: self._report(name, v, r))
            except (StorageUnavailable, StorageMisconfigured) as exc:
                log.warning("mirror catch-up: target %s (%s) is unavailable: %s", name, target.backend.name,
                            exc.message)
                self.suspect.add(name)
                self._estimate(target, views)
                return
            except StorageError as exc:
                log.warning("mirror catch-up of %s for %s failed: %s", view.stamp, name, getattr(exc, "message", exc))
                continue
            copied += result.copied
            for key in result.corrupt:
                log.error("not mirrored to %s: %s fails verification on the primary", name, key)
        left = len(self.pending.get(name, {}))
        if copied or left:
            log.info("mirror catch-up %s: %d object(s) copied, %d still missing%s", name, copied, left,
                     " (tick budget spent; the next tick goes on)" if budget.spent() and left else "")
        if self.auto_retention and not left:
            for view in views:
                self._retention(target, view.stamp, log, shared=True)

    def _retention(self, target: Target, stamp: str, logger, shared: bool = False) -> None:
        """The target's own retention, once a set completed and was copied (like the catalog's on the primary);
        with ``shared`` (the timer, once the target lacks nothing) also of the data sets share
        (``workers.mirror.shared``). A writer key without the delete right (deploy/s3-policies) is told, not
        failed."""
        p = target.policy
        try:
            plan = apply_retention(target.backend, stamp, keep_last=p.keep_last, keep_within=p.keep_within,
                                   incomplete_grace=p.grace)
            if shared:
                self._shared(target, stamp, logger)
        except StoragePermissionDenied as exc:
            told = target.settings.name in self.denied           # the timer would say it every tick: once is enough
            self.denied.add(target.settings.name)
            (logger.debug if told else logger.warning)(
                "retention on mirror target %s skipped: %s (with a writer-only key, run `appsvc-dr --store %s "
                "retention apply` with the deleter key)", target.settings.name, exc.message, target.settings.name)
            return
        gone = plan.delete
        if gone or plan.locked:
            logger.warning("retention on mirror target %s: deleted %d set(s) (%s)%s", target.settings.name,
                           len(gone), ", ".join(gone) or "-", "".join(
                               f"; {s} locked until {u:%Y-%m-%d %H:%M} UTC" for s, u in plan.locked.items()))

    def _shared(self, target: Target, stamp: str, logger) -> None:
        plan = apply_target(self.primary, target.backend, stamp)
        name = target.settings.name
        if plan.delete:
            logger.warning("retention on mirror target %s: deleted %d object(s) of %s's shared data (file-share "
                           "repository, Function Apps packs) no set it keeps needs", name, len(plan.delete), stamp)
        if plan.locked:
            until = max(plan.locked.values())
            logger.warning("retention on mirror target %s: %d object(s) of %s's shared data are due for deletion but "
                           "locked (S3 Object Lock) until %s UTC at the latest: deleted by the first run after that "
                           "(e.g. %s)", name, len(plan.locked), stamp, f"{until:%Y-%m-%d %H:%M}", min(plan.locked))
        for note in plan.notes:
            logger.info("retention on mirror target %s (%s): %s", name, stamp, note)

    def _estimate(self, target: Target, views: list[PrimaryView]) -> None:
        """A target that cannot be listed: its backlog is what the primary got since it was last caught up."""
        since = self.caught_up.get(target.settings.name)
        waiting = dict(self.pending.get(target.settings.name, {}))
        for view in views:
            try:
                waiting.update((o.key, o) for o in wanted_objects(self.primary, view.stamp, target.policy, view=view)
                               if since is None or o.modified > since)
            except StorageError:
                continue
        self.gauges.set(target.settings.name, SyncResult(len(waiting), backlog=list(waiting.values())))

    def close(self) -> None:
        for backend in (self.primary, *(t.backend for t in self.targets)):
            backend.close()


_CONSUMES = (ArtifactStored, SecretsStored, FileshareSynced, BackupSetCompleted)
SPEC = WorkerSpec(WORKER, {**{model: MirrorHandler.__call__ for model in _CONSUMES},
                           BackupDue: MirrorHandler.before_set}, concurrency=1)


def build_mirror_worker(*, mirror: MirrorSettings, store: StoreSettings, retention: RetentionSettings,
                        encryption: EncryptionSettings, metrics: Metrics | None = None) -> WorkerSpec:
    """The ``mirror`` worker. Without targets it acknowledges every event and copies nothing (a warning at
    start says so), so a site without a secondary store can run every built-in worker. The encryption
    section's Trust is attached to the primary and every target: what decides a target's deletions is read
    verified (copies are made as stored, signatures included)."""
    if not mirror.targets:
        log.warning("the mirror worker has no targets: nothing is copied (set APPSVC_DR_MIRROR__TARGETS to a "
                    "JSON list of stores, e.g. [{\"name\": \"dr-site\", \"kind\": \"s3\", …}])")
    trust = trust_from_settings(encryption)
    try:
        targets = [Target(t, attach(target_store(t), trust), policy_for(t, retention)) for t in mirror.targets]
    except StorageError as exc:
        raise ConfigurationError(f"mirror target: {exc}", hint=getattr(exc, "hint", "")) from None
    metrics = metrics or Metrics()
    primary = attach(build_store(store), trust)
    watched = [Watched("primary", primary, store.quota_bytes, retention.keep_last)] + [
        Watched(t.settings.name, t.backend, t.settings.quota_bytes, t.policy.keep_last) for t in targets]
    handler = MirrorHandler(primary, targets, mirror.retry_for, MirrorGauges(metrics), auto_retention=retention.auto,
                            capacity=CapacityWatch(watched, metrics, WORKER),
                            catch_up=Budget(mirror.catch_up_objects, mirror.catch_up_bytes))
    if not targets:
        return SPEC.bind(handler, on_shutdown=handler.close)
    return SPEC.bind(handler, on_shutdown=handler.close, on_timer=handler.catch_up,
                     timer_interval=mirror.catch_up_interval.total_seconds())
