"""Forget: which file-share snapshots to keep, and removing the others' manifests and summaries.

The policy is backup-set retention's (``workers.artifacts.retention``) applied to snapshots, per group of
snapshots of the same source and sub-path, newest first:

1. the newest snapshot of a group is always kept;
2. the newest ``keep_last``; the newest of each of the last ``keep_daily`` days and ``keep_weekly`` ISO weeks
   that have snapshots; every snapshot younger than ``keep_within``; a snapshot whose age is unknown;
3. the snapshot of every backup set that retention keeps under the same ``keep_last`` / ``keep_within``
   (so a kept set can still restore its share), in particular of an incomplete set still being assembled.

Forget only deletes ``snapshots/<id>.json`` and ``<id>.summary.json`` (and their records): packs and index are
untouched, so it needs no private key and no lock (it never adds what a prune must keep, and a sync only
reads the newest snapshot, which is never forgotten). ``prune`` frees the data afterwards. The manifest goes
first, the summary last: a half-forgotten snapshot is still listed and finished by the next forget.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from workers.artifacts.retention import format_duration, plan_retention
from workers.artifacts.service import RECORD_SUFFIX
from workers.repository.repo import Repository
from workers.storage.base import locked_until


@dataclass(frozen=True)
class Policy:
    keep_last: int = 7
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_within: timedelta | None = None

    def describe(self) -> str:
        rules = [f"the newest {self.keep_last}"] if self.keep_last else []
        rules += [f"one a day for {self.keep_daily} day(s)"] if self.keep_daily else []
        rules += [f"one a week for {self.keep_weekly} week(s)"] if self.keep_weekly else []
        rules += [f"every one younger than {format_duration(self.keep_within)}"] if self.keep_within else []
        return "keep " + (", ".join(rules) or "only the newest") + " per source, and those of kept backup sets"


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: str
    created: datetime | None
    group: str                          # source (+ sub-path)
    backup_set_id: str | None = None

    @property
    def order(self) -> tuple[datetime, str]:
        return (self.created or datetime.min.replace(tzinfo=timezone.utc), self.snapshot_id)


@dataclass
class ForgetPlan:
    stamp: str
    policy: Policy
    keep: list[str] = field(default_factory=list)      # newest first
    forget: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False
    deleted_objects: int = 0
    locked: dict[str, datetime] = field(default_factory=dict)   # due, but under S3 Object Lock until then

    def describe(self) -> list[str]:
        verb = "would forget" if self.dry_run else "forget"
        return [f"keep   {s}  {self.reasons[s]}" for s in self.keep] + \
               [f"{verb} {s}  {self.reasons[s]}" if s not in self.locked else
                f"locked {s}  {self.reasons[s]}; locked (S3 Object Lock) until {self.locked[s]:%Y-%m-%d %H:%M} UTC"
                for s in self.forget]


def _parse(value: object) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def decide_snapshots(stamp: str, snapshots: list[Snapshot], policy: Policy, *, kept_sets: dict[str, str] | None = None,
                     now: datetime | None = None) -> ForgetPlan:
    """Apply the policy (pure). ``kept_sets``: backup-set id -> why retention keeps it."""
    if min(policy.keep_last, policy.keep_daily, policy.keep_weekly) < 0:
        raise ValueError("keep counts must be >= 0")
    now = now or datetime.now(timezone.utc)
    kept_sets = kept_sets or {}
    plan = ForgetPlan(stamp, policy)
    groups: dict[str, list[Snapshot]] = {}
    for snap in sorted(snapshots, key=lambda s: s.order, reverse=True):
        groups.setdefault(snap.group, []).append(snap)
    for members in groups.values():
        reasons: dict[str, str] = {}
        keep = lambda s, why: reasons.setdefault(s.snapshot_id, why)  # noqa: E731
        keep(members[0], "newest snapshot of its source (always kept)")
        for snap in members[:policy.keep_last]:
            keep(snap, f"one of the newest {policy.keep_last}")
        for count, bucket, unit in ((policy.keep_daily, lambda d: d.date(), "day"),
                                    (policy.keep_weekly, lambda d: d.isocalendar()[:2], "week")):
            seen: list[object] = []
            for snap in members:
                if snap.created is not None and len(seen) < count and bucket(snap.created) not in seen:
                    seen.append(bucket(snap.created))
                    keep(snap, f"newest of its {unit} (keep {count} {unit}s)")
        for snap in members:
            if snap.created is None:
                keep(snap, "age unknown")
            elif policy.keep_within and snap.created >= now - policy.keep_within:
                keep(snap, f"younger than {format_duration(policy.keep_within)}")
            elif snap.backup_set_id in kept_sets:
                keep(snap, f"its backup set is kept: {kept_sets[snap.backup_set_id]}")
        for snap in members:
            if snap.snapshot_id in reasons:
                plan.keep.append(snap.snapshot_id)
            else:
                plan.forget.append(snap.snapshot_id)
                reasons[snap.snapshot_id] = "beyond the policy"
        plan.reasons.update(reasons)
    return plan


def snapshots_of(repo: Repository) -> list[Snapshot]:
    return [Snapshot(s["snapshot_id"], _parse(s.get("created_at")),
                     s.get("source", "?") + (f" ({s['sub_path']})" if s.get("sub_path") else ""),
                     s.get("backup_set_id")) for s in repo.summaries()]


def kept_sets(repo: Repository, policy: Policy, now: datetime | None = None) -> dict[str, str]:
    """Backup sets that retention keeps under the same keep-last / keep-within, with its reason."""
    plan = plan_retention(repo.data.backend, repo.stamp, policy.keep_last, policy.keep_within, now)
    return {s: plan.reasons[s] for s in plan.keep}


def forget(repo: Repository, policy: Policy, *, dry_run: bool = False, now: datetime | None = None) -> ForgetPlan:
    """Plan, then (unless ``dry_run``) delete the forgotten snapshots' manifests and summaries."""
    snapshots = snapshots_of(repo)
    sets = kept_sets(repo, policy, now) if snapshots else {}
    plan = decide_snapshots(repo.stamp, snapshots, policy, kept_sets=sets, now=now)
    plan.dry_run = dry_run
    if not dry_run:
        for snapshot in plan.forget:
            until = locked_until(repo.data.backend, _keys(repo, snapshot))
            if until is not None:
                plan.locked[snapshot] = until
                continue
            plan.deleted_objects += forget_snapshot(repo, snapshot)
    return plan


def _keys(repo: Repository, snapshot: str) -> tuple[str, ...]:
    manifest, summary = repo.manifest_key(snapshot), repo.summary_key(snapshot)
    return (manifest, manifest + RECORD_SUFFIX, summary, summary + RECORD_SUFFIX)


def forget_snapshot(repo: Repository, snapshot: str) -> int:
    """Delete the snapshot's manifest and summary (nothing when one of them is under S3 Object Lock: 0)."""
    keys = _keys(repo, snapshot)
    if locked_until(repo.data.backend, keys) is not None:
        return 0
    for key in keys:
        repo.data.backend.delete(key)
    return len(keys)
