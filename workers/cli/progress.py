"""A one-line progress bar on stderr, shown only when stderr is a terminal."""
from __future__ import annotations

import sys
import time

MiB = 1024 * 1024


class ProgressBar:
    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done, self.shown = label, max(total, 1), 0, 0.0
        self.enabled = sys.stderr.isatty()

    def __call__(self, nbytes: int) -> None:
        self.done += nbytes
        now = time.monotonic()
        if self.enabled and (now - self.shown > 0.1 or self.done >= self.total):
            self.shown = now
            sys.stderr.write(f"\r{self.label} {min(100.0, 100 * self.done / self.total):5.1f}% "
                             f"{self.done / MiB:.1f}/{self.total / MiB:.1f} MiB")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.shown:
            sys.stderr.write("\n")
