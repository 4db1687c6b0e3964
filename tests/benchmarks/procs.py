"""What the benchmarks read from /proc: peak RSS, process trees, CPU time, and a child run to completion."""
from __future__ import annotations

import os
import subprocess
import tempfile
import time
from typing import Iterator


def vm_hwm_mib(pid: int | str = "self") -> float:
    """The process's own peak RSS (VmHWM). Unlike ru_maxrss it does not include the RSS of the parent that
    forked it (Linux carries the forked address space's high-water mark into ru_maxrss at exec)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return 0.0


def processes() -> Iterator[tuple[int, str, list[str]]]:
    """(pid, comm, the /proc/PID/stat fields after comm, from state on) of every live process."""
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as fh:
                comm, rest = fh.read()[:-1].split("(", 1)[1].rsplit(") ", 1)
        except (OSError, ValueError):
            continue
        yield int(entry), comm, rest.split()


def descendants(root: int) -> list[tuple[int, str]]:
    """(pid, comm) of every live descendant of ``root`` (no /proc/PID/task/TID/children on this kernel)."""
    procs = {pid: (int(fields[1]), comm) for pid, comm, fields in processes()}
    found, frontier = [], {root}
    while frontier:
        frontier = {pid for pid, (ppid, _) in procs.items() if ppid in frontier}
        found += [(pid, procs[pid][1]) for pid in frontier]
    return found


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of ``root`` and of its children it reaped, plus those of its live descendants
    (a server that forks a process per connection, like smbd: finished ones are in its own cutime/cstime)."""
    total, ticks = 0.0, os.sysconf("SC_CLK_TCK")
    wanted = {root, *(pid for pid, _ in descendants(root))}
    for pid, _, fields in processes():
        if pid in wanted:
            total += sum(int(f) for f in fields[11:15]) / ticks
    return total


def cpu_seconds(comm: str) -> float:
    """User + system CPU seconds used so far by the first process named ``comm``; 0 when there is none."""
    for _, name, fields in processes():
        if name == comm:
            return _cpu(fields)
    return 0.0


def pid_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (its threads included); 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return _cpu(fields)


def _cpu(fields: list[str]) -> float:
    """utime + stime of /proc/PID/stat's fields after comm, in seconds."""
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(argv: list[str], env: dict[str, str] | None = None, *, interval: float = 0.02,
        watch_descendants: bool = False) -> tuple[float, float, dict[str, float], str]:
    """Run a child to completion: (wall seconds, its peak RSS MiB, {descendant comm: peak RSS MiB} when
    ``watch_descendants``, stdout), polling VmHWM every ``interval`` seconds."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, stdout=out, env=env)
        own, tools = 0.0, {}
        while proc.poll() is None:
            own = max(own, vm_hwm_mib(proc.pid))
            for pid, name in descendants(proc.pid) if watch_descendants else ():
                if not name.startswith("python"):       # "python": a fork caught before its exec
                    tools[name] = max(tools.get(name, 0.0), vm_hwm_mib(pid))
            time.sleep(interval)
        wall = time.perf_counter() - started
        out.seek(0)
        text = out.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... exited with {proc.returncode}")
    return wall, own, tools, text


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of process ``root`` and everything it started: its own, its reaped children's
    (cutime/cstime: an smbd's exited connection processes) and its live descendants'."""
    ticks = 0
    for pid in [root, *(pid for pid, _ in descendants(root))]:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        ticks += sum(int(f) for f in fields[11:15]) if pid == root else int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")
