"""The restore plan: the snapshot compared with the target before anything is written.

Each selected entry gets one :class:`Step`: ``create`` (nothing there), ``check`` (a file of the same size and
mtime: its content is hashed when restoring, and left alone if identical), ``replace`` (another file there), ``keep``
(a directory already there), or a conflict resolved by a stated rule or left ``unresolved`` (listed, not written,
and the run exits 1):

* a **read-only file** where a file goes: ``--overwrite`` clears read-only and replaces it; without, unresolved;
* a **directory where a file goes**: ``--overwrite`` moves the directory aside (``NAME.appsvc-dr-aside-TIME``:
  nothing is deleted); without, unresolved;
* a **file where a directory goes**: moved aside, or removed with ``--overwrite``;
* **names that differ only in case** on a case-insensitive target: the first (in path order) keeps its name, the
  others get a visible suffix (``name (case 2).txt``) and are listed — the target then differs from the snapshot;
* a **name an SMB target cannot hold** (``<>"|?*``, a trailing dot or space, a device name): unresolved.

A symbolic link, reparse point or special file where anything goes is refused before anything is written
(:class:`~workers.repository.paths.UnsafeTargetError`): a conflict is never resolved by following a link.
"""
from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field

from workers.fileshare.tree import READONLY, Stat, Tree
from workers.repository.manifest import Entry
from workers.repository.paths import REPARSE_POINT, UnsafeTargetError, shown

_WINDOWS_BAD = re.compile(r'[<>"|?*]')
_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
ASIDE = ".appsvc-dr-aside-"
READONLY_IN_THE_WAY = "a read-only file is in the way"
READONLY_HINT = "Run again with --overwrite to clear read-only and replace it, or clear it yourself."


@dataclass(slots=True)
class Step:
    entry: Entry
    target: str                      # the path written in the target (differs only for a case collision)
    action: str                      # create | check | replace | keep | unresolved
    existing: Stat | None = None
    resolve: str = ""                # clear-readonly | aside | remove | rename (a conflict resolved by a rule)
    reason: str = ""                 # why (unresolved, or what the rule did)
    hint: str = ""


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    case_insensitive: bool = False
    target_exists: bool = True

    def counts(self) -> Counter:
        return Counter(s.action for s in self.steps)

    def conflicts(self) -> list[Step]:
        return [s for s in self.steps if s.resolve or s.action == "unresolved"]

    def summary(self) -> str:
        c = self.counts()
        dirs_new = sum(1 for s in self.steps if s.entry.is_dir and s.action == "create")
        files = [s for s in self.steps if not s.entry.is_dir]
        return (f"{dirs_new} directories to create, {sum(1 for s in files if s.action == 'create')} files to "
                f"create, {c['replace']} to replace, {c['check']} probably identical (same size and mtime; hashed "
                f"when restoring), {len(self.conflicts())} conflicts ({c['unresolved']} left unresolved)")


def readonly_in_the_way(step: Step) -> bool:
    """Something read-only is where ``step`` goes (it must be cleared, or refused, before anything is written)."""
    return step.existing is not None and bool(step.existing.attrs & READONLY)


def aside_name(name: str) -> str:
    return f"{name}{ASIDE}{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"


def windows_name_problem(name: str) -> str | None:
    if _WINDOWS_BAD.search(name):
        return f"a character Windows file names cannot hold ({_WINDOWS_BAD.search(name).group()!r})"
    if name.endswith((".", " ")):
        return "a name ending in a dot or a space"
    if name.split(".")[0].upper() in _DEVICES:
        return "a Windows device name"
    return None


class Planner:
    """Lists the target's directories (one listing each, top-down) and classifies every entry."""

    def __init__(self, target: Tree, *, overwrite: bool = False) -> None:
        self.target, self.overwrite = target, overwrite
        self._listings: dict[str, dict[str, Stat] | None] = {}
        self._folded = False

    def plan(self, entries: list[Entry], *, exists: bool = True) -> Plan:
        plan = Plan(case_insensitive=exists and self.target.case_insensitive(), target_exists=exists)
        self._folded = plan.case_insensitive
        if not exists:
            self._listings[""] = None
        mapped: dict[str, str] = {"": ""}               # snapshot directory -> its path in the target
        blocked: dict[str, str] = {}                    # snapshot directory -> why nothing goes under it
        used: dict[str, set[str]] = {}                  # target directory -> names taken (casefolded if needed)
        windows = getattr(self.target, "windows_names", False)
        for entry in sorted(entries, key=lambda e: e.path):
            parent, _, name = entry.path.rpartition("/")
            for ancestor in _ancestors(parent):
                if ancestor in blocked:
                    plan.steps.append(Step(entry, entry.path, "unresolved", reason=blocked[ancestor],
                                           hint="Resolve the problem with that directory and restore again."))
                    break
            else:
                step = self._step(entry, mapped, used, plan.case_insensitive, windows)
                plan.steps.append(step)
                if entry.is_dir:
                    if step.action == "unresolved":
                        blocked[entry.path] = f"its directory {shown(entry.path)} could not be restored"
                    mapped[entry.path] = step.target
        return plan

    def _step(self, entry: Entry, mapped: dict[str, str], used: dict[str, set[str]], folded: bool,
              windows: bool) -> Step:
        parent, _, name = entry.path.rpartition("/")
        tparent = mapped.get(parent, parent)            # a parent not listed as an entry (--path) keeps its name
        if windows and (problem := windows_name_problem(name)):
            return Step(entry, entry.path, "unresolved", reason=f"{problem}: the SMB target cannot hold it",
                        hint="Restore into a local directory with --target, or rename it after restoring there.")
        taken = used.setdefault(tparent, set())
        key, tname, n = (name.casefold() if folded else name), name, 1
        while key in taken:                             # a case-only collision with a sibling of the snapshot
            n += 1
            stem, dot, ext = name.rpartition(".") if "." in name[1:] else (name, "", "")
            tname = f"{stem} (case {n}){dot}{ext}"
            key = tname.casefold() if folded else tname
        taken.add(key)
        target = f"{tparent}/{tname}" if tparent else tname
        existing = self._lookup(tparent, tname, folded)
        step = Step(entry, target, "create", existing)
        if n > 1:
            step.resolve = "rename"
            step.reason = (f"differs from another name only in case and the target is case-insensitive: restored "
                           f"as {shown(target)}")
            step.hint = "Rename one of them on the target by hand if both are needed under their own names."
        if existing is None:
            return step
        if existing.attrs & REPARSE_POINT or (existing.attrs & 0x40 and not existing.is_dir):   # 0x40: device
            raise UnsafeTargetError(f"{self.target.name}/{shown(target)[1:-1]} is a symbolic link or reparse point "
                                    "where the snapshot has a " + ("directory" if entry.is_dir else "file") +
                                    ": refused (a restore never follows or replaces it)")
        if entry.is_dir:
            if existing.is_dir:
                step.action = "keep"
            else:                                       # a file where a directory goes: never left there
                step.resolve = "remove" if self.overwrite else "aside"
                step.reason = "a file was where the snapshot has a directory: " + \
                    ("removed (--overwrite)" if self.overwrite else "moved aside")
            return step
        if existing.is_dir:
            if not self.overwrite:
                return _unresolved(step, "a directory is where the snapshot has a file",
                                   "Move or remove that directory, or run again with --overwrite (it is then moved "
                                   f"aside as NAME{ASIDE}TIME, nothing is deleted).")
            step.resolve, step.reason = "aside", "a directory was where the snapshot has a file: moved aside"
            return step
        same = existing.size == entry.size and existing.mtime_ns // 100 == entry.mtime_ns // 100
        step.action = "check" if same else "replace"
        if existing.attrs & READONLY:                   # identical: left alone; else replaced only with --overwrite
            if not self.overwrite:
                return step if same else _unresolved(step, READONLY_IN_THE_WAY, READONLY_HINT)
            step.resolve, step.reason = "clear-readonly", "a read-only file was replaced (--overwrite)"
        return step

    def _lookup(self, parent: str, name: str, folded: bool) -> Stat | None:
        listing = self._listing(parent)
        if not listing:
            return None
        found = listing.get(name)
        if found is None and folded:
            found = listing.get("\0" + name.casefold())
        return found

    def _listing(self, rel: str) -> dict[str, Stat] | None:
        if rel in self._listings:
            return self._listings[rel]
        parent, _, name = rel.rpartition("/")
        here = self._listing(parent) if rel else {}
        st = None if here is None else here.get(name) or (here.get("\0" + name.casefold()) if self._folded else None)
        if rel and (st is None or not st.is_dir or st.attrs & REPARSE_POINT):
            listing = None                              # not there (or not a directory: the plan says so)
        else:
            listing = {}
            for st in self.target.listdir(rel):
                listing[st.name] = st
                listing.setdefault("\0" + st.name.casefold(), st)
        self._listings[rel] = listing
        return listing


def _unresolved(step: Step, reason: str, hint: str) -> Step:
    step.action, step.reason, step.hint = "unresolved", reason, hint
    return step


def _ancestors(path: str) -> list[str]:
    names = path.split("/") if path else []
    return ["/".join(names[:i]) for i in range(1, len(names) + 1)]
