r"""UNC paths: ``\\host\share[\dir...]`` (``/`` accepted for ``\``)."""
from __future__ import annotations

import re
from dataclasses import dataclass

_SEPARATORS = re.compile(r"[\\/]+")


def split_unc(path: str) -> list[str] | None:
    """``[host, share, dir...]`` of a path with two leading separators, or None when it is not one (no checks)."""
    if not path.startswith(("\\\\", "//")):
        return None
    return [p for p in _SEPARATORS.split(path) if p]


@dataclass(frozen=True)
class Unc:
    """A validated UNC path: a host, a share and the directories below it (never ``.`` or ``..``)."""

    host: str
    share: str
    dirs: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        return "\\\\" + "\\".join([self.host, self.share, *self.dirs])

    def url(self, port: int) -> str:
        """How logs and events name it: ``smb://host[:port]/share/dir`` (never credentials)."""
        return f"smb://{self.host}{'' if port == 445 else f':{port}'}/{'/'.join([self.share, *self.dirs])}"


def parse_unc(path: str | None) -> Unc | None:
    """The :class:`Unc` of ``path``, or None when it is not ``\\\\host\\share[\\dir...]`` or holds ``.``/``..``."""
    parts = split_unc(path or "")
    if not parts or len(parts) < 2 or any(p in (".", "..") for p in parts):
        return None
    return Unc(parts[0], parts[1], tuple(parts[2:]))
