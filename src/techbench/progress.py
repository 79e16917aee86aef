"""Progress a person can follow: one line per finished run with its place in the study, the elapsed time and an
estimate of what is left, and one summary line per study."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("techbench")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """``total`` runs to train of the study's ``wanted``; the ETA is the mean time per run so far times the
    runs left (seeds trained as one stack finish together, so it settles after the first few configurations)."""

    def __init__(self, study: str, total: int, wanted: int):
        self.study, self.total, self.k = study, total, 0
        self.start = time.perf_counter()
        skipped = wanted - total
        if skipped:
            log.info("%s: %d of %d runs already finished (skipped), %d to train", study, skipped, wanted, total)

    def done(self, what: str) -> None:
        self.k += 1
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.k * (self.total - self.k)
        log.info("[%d/%d] %s · %s elapsed, ETA %s", self.k, self.total, what, _duration(elapsed), _duration(eta))

    def close(self) -> None:
        log.info("%s: %d runs trained in %s", self.study, self.k, _duration(time.perf_counter() - self.start))
