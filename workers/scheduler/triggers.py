"""When a schedule fires: standard 5-field cron expressions (croniter) or a fixed interval aligned to a time of
day, each in UTC or an IANA time zone; and schedule entries ``CRON[=COMPONENTS]`` parsed into named schedules.

Cron: ``minute hour day-of-month month day-of-week`` with ranges (``1-5``), lists (``1,15``), steps (``*/15``,
``9-17/2``), names (``JAN``-``DEC``, ``SUN``-``SAT``) and the usual rule that when both day-of-month and
day-of-week are restricted a day matching *either* fires. croniter's extensions (``L``, ``#``) are accepted as
croniter reads them; 6-field (seconds) and 7-field (years) forms are refused, so an expression means here what
it means in a crontab. Times are computed in the schedule's zone and reported in UTC. Where daylight saving
skips an hour (spring), a slot inside it fires at the first valid time after it (02:30 → 03:00); where an hour
repeats (autumn), a wall-clock time fires once, the first time.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from typing import Protocol, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from contracts.events.backup import ALL_COMPONENTS
from workers.runtime.errors import ConfigurationError
from workers.runtime.parsing import comma_list

UTC = timezone.utc
CRON_HINT = ('A cron expression has 5 fields, "minute hour day-of-month month day-of-week", e.g. "0 2 * * *" '
             '(daily 02:00) or "0 * * * *=databases" (hourly, databases only); see README "Scheduling".')


class Trigger(Protocol):
    def next_after(self, now: datetime) -> datetime:
        """The first slot strictly after ``now`` (UTC)."""

    def latest_at_or_before(self, now: datetime) -> datetime:
        """The newest slot at or before ``now`` (UTC)."""


def zone(name: str) -> ZoneInfo | timezone:
    """An IANA time zone (``Europe/Berlin``); ``UTC`` needs no tz database."""
    if name.upper() in ("UTC", "Z", "ETC/UTC"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"unknown time zone {name!r}",
                                 hint="Use an IANA name such as UTC or Europe/Berlin "
                                      "(APPSVC_DR_SCHEDULE__TIMEZONE / --timezone).") from None


@dataclass(frozen=True)
class CronTrigger:
    expression: str
    tz: ZoneInfo | timezone = UTC

    def __post_init__(self) -> None:
        fields = self.expression.split()
        if len(fields) != 5 or not croniter.is_valid(" ".join(fields)):
            raise ConfigurationError(f"invalid cron expression {self.expression!r}", hint=CRON_HINT)

    def next_after(self, now: datetime) -> datetime:
        found = self._step(now.astimezone(self.tz), forward=True)
        if self._repeated(found):   # the second time a wall-clock time occurs (autumn): it already fired
            found = self._step(found.astimezone(self.tz), forward=True)
        return found

    def _repeated(self, slot: datetime) -> bool:
        local = slot.astimezone(self.tz)
        return bool(local.fold) and local.replace(fold=0).utcoffset() != local.utcoffset()

    def latest_at_or_before(self, now: datetime) -> datetime:
        minute = now.astimezone(self.tz).replace(second=0, microsecond=0)
        return self._step(minute + timedelta(seconds=1), forward=False)

    def _step(self, start: datetime, *, forward: bool) -> datetime:
        try:
            it = croniter(self.expression, start)
            found = it.get_next(datetime) if forward else it.get_prev(datetime)
        except CroniterBadDateError:  # e.g. "0 0 30 2 *": no such day, ever
            raise ConfigurationError(f"cron expression {self.expression!r} never fires", hint=CRON_HINT) from None
        return found.astimezone(UTC)


@dataclass(frozen=True)
class IntervalTrigger:
    """Every ``every``, aligned to ``at`` (UTC) on the day, or to midnight: the ``--every/--at`` form."""

    every: timedelta
    at: time | None = None

    def __post_init__(self) -> None:
        if self.every <= timedelta(0):
            raise ValueError("the interval must be positive")

    def next_after(self, now: datetime) -> datetime:
        anchor = datetime.combine(now.date(), self.at or time(0), tzinfo=UTC)
        if anchor > now:
            anchor -= ((anchor - now) // self.every + 1) * self.every
        return anchor + ((now - anchor) // self.every + 1) * self.every

    def latest_at_or_before(self, now: datetime) -> datetime:
        return self.next_after(now) - self.every


def next_run(now: datetime, every: timedelta, at: time | None = None) -> datetime:
    """The first ``--every/--at`` slot after ``now``; slots are aligned, so a restarted scheduler keeps them."""
    return IntervalTrigger(every, at).next_after(now)


@dataclass(frozen=True)
class Schedule:
    """One set of components and the triggers that ask for it; its name keys its slots in the store."""

    components: tuple[str, ...]
    triggers: tuple[Trigger, ...]

    @property
    def name(self) -> str:
        return "+".join(self.components)

    def next_after(self, now: datetime) -> datetime:
        return min(t.next_after(now) for t in self.triggers)

    def latest_at_or_before(self, now: datetime) -> datetime:
        return max(t.latest_at_or_before(now) for t in self.triggers)


def ordered_components(names: Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    """``names`` checked against this site's components, in the canonical order (so a set has one name)."""
    unknown = [n for n in names if n not in ALL_COMPONENTS]
    if unknown or not names:
        raise ConfigurationError(f"unknown or no components {list(names)!r} in a schedule",
                                 hint=f"Use a comma-separated subset of {', '.join(ALL_COMPONENTS)}.")
    absent = [n for n in names if n not in allowed]
    if absent:
        raise ConfigurationError(f"schedule asks for {', '.join(absent)}, which this site does not back up",
                                 hint="Add them to APPSVC_DR_COMPONENTS or drop them from the schedule.")
    return tuple(c for c in ALL_COMPONENTS if c in names)


def parse_entries(entries: Sequence[str], default_components: Sequence[str], tz: ZoneInfo | timezone = UTC,
                  allowed: Sequence[str] = ALL_COMPONENTS) -> list[Schedule]:
    """``["0 * * * *=databases", "0 2 * * *=fileshare,secrets", "30 3 * * SUN"]`` → schedules, one per
    component set (entries naming the same set share it); an entry without ``=`` asks for
    ``default_components``."""
    by_set: dict[tuple[str, ...], list[Trigger]] = {}
    for entry in entries:
        expression, _, components = entry.partition("=")
        names = comma_list(components) if components.strip() else list(default_components)
        key = ordered_components(names, allowed)
        by_set.setdefault(key, []).append(CronTrigger(expression.strip(), tz))
    return [Schedule(k, tuple(v)) for k, v in by_set.items()]


def describe(schedule: Schedule) -> str:
    parts = [t.expression if isinstance(t, CronTrigger) else f"every {t.every}" for t in schedule.triggers]
    return f"{schedule.name} ({'; '.join(parts)})"
