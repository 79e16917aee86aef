"""View of multi_task (probes/multi_task.py): per task, the shared-trunk model against the same task trained
alone, paired over seeds ("potentially performing better on each task than separate models would")."""

from __future__ import annotations

from typing import Any

from techbench.analysis.stats import paired_diff_ci
from techbench.report.probes.views import view

SINGLE, MULTI = ": single-task", ": multi-task"


def _by_seed(results: list[dict[str, Any]], row: str) -> dict[int, float]:
    return {res["seed"]: r["acc"] for res in results for r in res["rows"] if r["row"] == row}


def verdict(results: list[dict[str, Any]]) -> list[str]:
    tasks = list(
        dict.fromkeys(r["row"][: -len(SINGLE)] for res in results for r in res["rows"] if r["row"].endswith(SINGLE))
    )
    out = []
    for t in tasks:
        d = paired_diff_ci(_by_seed(results, t + MULTI), _by_seed(results, t + SINGLE))
        kind = "higher" if d.excludes(0) and d.mean > 0 else "lower" if d.excludes(0) else "not distinguishable"
        out.append(
            f"`{t}`: multi-task − single-task {d.fmt(100, 1)} pp test accuracy, paired over {d.n} seeds ({kind})."
        )
    return out


view("multi_task", verdict=verdict)
