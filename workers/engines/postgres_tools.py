"""Running the PostgreSQL client tools for :class:`~workers.engines.postgres.PostgresEngine`: a tool's stderr read
line by line (progress) with its failure classified, ``pg_restore --list`` of an archive, and the 0600 staging file
pg_dump writes into. The connection settings and the password reach the tools only in ``PG*`` environment
variables (the engine's ``tool_env``)."""
from __future__ import annotations

import collections
import contextlib
import os
import subprocess
from typing import Callable

from workers.engines.postgres_errors import missing_tool
from workers.engines.postgres_text import parse_listing
from workers.runtime.errors import DrError, PermanentError

_QUIET = ("pg_dump: dumping", "pg_dump: reading", "pg_restore: processing", "pg_restore: creating",
          "pg_restore: dropping")                     # progress lines: not kept for the error message


def create_private(path: str) -> None:
    """An empty file at ``path``, 0600 whatever the umask (an old one from a crashed run is replaced)."""
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except OSError as exc:
        raise PermanentError(f"cannot create the staging file {path}: {exc.strerror or exc}",
                             hint="Check that APPSVC_DR_STAGING__DATABASE_DIR exists and the worker may write "
                                  "there.") from None


def archive_listing(pg_restore: str, env: dict[str, str], path: str) -> tuple[list[str], str | None]:
    """Kinds of the archive's TOC entries ("TABLE", "TABLE DATA", ... other entries as "") and the name of the
    database it was dumped from (its header's ``dbname:``)."""
    if not os.path.isfile(path):
        raise PermanentError(f"backup file {path} does not exist", hint="Check the staging / source path.")
    try:
        done = subprocess.run([pg_restore, "--list", os.path.abspath(path)], env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, errors="replace")
    except OSError:
        raise missing_tool("pg_restore", "APPSVC_DR_DATABASE__PG_RESTORE") from None
    if done.returncode != 0:
        raise PermanentError(f"{path} is not a readable pg_dump archive: {done.stderr.strip()[-500:]}",
                             hint="The dump is damaged, truncated or not a custom-format archive: take a "
                                  "new backup.")
    return parse_listing(done.stdout)


def run_tool(argv: list[str], env: dict[str, str], on_line: Callable[[str], None] | None, *, action: str,
             setting: str, permanent: bool, failure: Callable[..., DrError]) -> None:
    """Run a PostgreSQL tool, reading its stderr line by line (each to ``on_line``); on failure raise
    ``failure(text, action=...)`` (classified, the password masked), or a PermanentError naming a damaged archive
    when ``permanent``. ``setting``: the APPSVC_DR_DATABASE__ setting that names the tool, for a missing one."""
    try:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, errors="replace")
    except OSError:
        raise missing_tool(os.path.basename(argv[0]), f"APPSVC_DR_DATABASE__{setting}") from None
    tail: collections.deque[str] = collections.deque(maxlen=40)
    assert proc.stderr is not None
    with proc:
        for line in proc.stderr:
            line = line.rstrip("\n")
            if on_line is not None:
                on_line(line)
            if not line.startswith(_QUIET):
                tail.append(line)
    if proc.returncode != 0:
        text = "\n".join(line for line in tail if "error" in line.lower() or "fatal" in line.lower()) \
            or "\n".join(tail)
        if permanent:
            raise PermanentError(f"{action} failed: {text[-1000:]}",
                                 hint="The archive is damaged or truncated: take a new backup.")
        raise failure(text, action=action)
