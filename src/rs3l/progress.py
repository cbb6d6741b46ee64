"""Progress on long work: a tqdm bar on a terminal, periodic log lines (done/total, rate) in job logs."""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

log = logging.getLogger("rs3l.progress")


class Progress:
    def __init__(self, total: int, desc: str, unit: str = "ev", log_every: float = 10.0):
        self.total, self.desc, self.unit, self.done = total, desc, unit, 0
        self.start = self.last = time.monotonic()
        self.log_every = log_every
        self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True) if sys.stderr.isatty() else None

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= self.log_every or self.done >= self.total:
            self.last = now
            log.info("%s: %d/%d %s (%.1f%%), %.1f %s/s", self.desc, self.done, self.total, self.unit,
                     100.0 * self.done / max(self.total, 1), self.rate, self.unit)

    @property
    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.start, 1e-9)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        log.info("%s: %d %s in %.1f s (%.1f %s/s)", self.desc, self.done, self.unit,
                 time.monotonic() - self.start, self.rate, self.unit)
