"""View of multi_task (probes/multi_task.py): per task, the shared-trunk model against the same task trained
alone, paired over seeds ("potentially performing better on each task than separate models would")."""

from __future__ import annotations

from typing import Any

from techbench.analysis.stats import paired_diff_ci
from techbench.report.probes.views import seed_values, view

SINGLE, MULTI = ": single-task", ": multi-task"


def verdict(results: list[dict[str, Any]]) -> list[str]:
    tasks = list(
        dict.fromkeys(r["row"][: -len(SINGLE)] for res in results for r in res["rows"] if r["row"].endswith(SINGLE))
    )
    out = []
    for t in tasks:
        d = paired_diff_ci(seed_values(results, t + MULTI), seed_values(results, t + SINGLE))
        out.append(
            f"`{t}`: multi-task − single-task {d.fmt(100, 1)} pp test accuracy, paired over {d.n} seeds "
            f"({d.direction()})."
        )
    return out


view("multi_task", verdict=verdict)
