"""Write a restored file safely: owner-only permissions from the first byte, visible only once complete."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def write_atomically(out: Path, fill: Callable[[BinaryIO], None], mode: int = 0o600) -> None:
    """Create a temp file next to ``out`` with ``mode``, let ``fill`` write it, then rename it over ``out``.
    On any error the temp file is removed and ``out`` is untouched."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as stream:
            fill(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
