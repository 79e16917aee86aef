"""techbench: side-by-side benchmarks of the training techniques of neural networks."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

__version__ = "0.1.0"


# Code that only reads finished runs (summaries, statistics, the results files, reports): changing it never
# changes a run.
NOT_IN_RUNS = ("analysis", "report", "results.py")


@functools.cache
def code_version() -> str:
    """Hash of the package's source that trains and measures runs: part of every run's identity, so a change
    to it re-runs the runs, while a change to how results are summarized or reported re-uses them."""
    return source_hash(Path(__file__).parent)


def source_hash(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] in NOT_IN_RUNS:
            continue
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]
