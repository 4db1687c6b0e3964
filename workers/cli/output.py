"""Write a restored file safely: owner-only permissions from the first byte, visible only once complete."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, TypeVar

from workers.runtime.errors import PermanentError

T = TypeVar("T")


def write_atomically(out: Path, fill: Callable[[BinaryIO], T], mode: int = 0o600) -> T:
    """Create a temp file next to ``out`` with ``mode``, let ``fill`` write it, then rename it over ``out``.
    On any error the temp file is removed and ``out`` is untouched."""
    out = out.resolve()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    except OSError as exc:
        raise PermanentError(f"cannot write next to {out}: {exc.strerror or exc}",
                             hint="Choose an --out in an existing, writable directory.") from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as stream:
            result = fill(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, out)
        return result
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
