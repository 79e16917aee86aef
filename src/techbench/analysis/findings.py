"""What the numbers say: rankings and paired comparisons over seeds, in sentences."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from techbench.analysis.rows import value
from techbench.analysis.stats import Estimate, mean_ci, paired_diff_ci


def by_seed(rows: list[dict[str, Any]], metric: str) -> dict[int, float]:
    """seed -> a row's value of ``metric`` (a derived key or a final metric name), finite values only."""
    out = {}
    for r in rows:
        v = value(r, metric)
        if isinstance(v, (int, float)) and math.isfinite(v):
            out[r["seed"]] = v
    return out


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone), same order as given."""
    m = len(pvalues)
    order = np.argsort(pvalues)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted.tolist()


def compare_to_best(groups: dict[str, list[dict[str, Any]]], metric: str = "test_acc") -> dict[str, Any]:
    """Rank techniques by mean ``metric``; paired difference of each to the best, Holm-adjusted."""
    means = {t: mean_ci([r[metric] for r in rows if r.get(metric) is not None]) for t, rows in groups.items()}
    ranked = sorted((t for t in means if means[t].n), key=lambda t: -means[t].mean)
    if not ranked:
        return {"ranked": [], "means": means, "diffs": {}}
    best = ranked[0]
    diffs: dict[str, tuple[Estimate, float]] = {}
    raw_p = []
    for t in ranked[1:]:
        a, b = by_seed(groups[best], metric), by_seed(groups[t], metric)
        common = sorted(set(a) & set(b))
        d = paired_diff_ci(b, a)
        p = float("nan")
        if len(common) >= 2 and np.ptp([b[s] - a[s] for s in common]) > 0:
            p = float(stats.ttest_rel([b[s] for s in common], [a[s] for s in common]).pvalue)
        diffs[t] = (d, p)
        raw_p.append(p if math.isfinite(p) else 1.0)
    for t, p_adj in zip(list(diffs), holm(raw_p) if raw_p else [], strict=True):
        diffs[t] = (diffs[t][0], p_adj)
    return {"ranked": ranked, "means": means, "best": best, "diffs": diffs}


def describe(groups: dict[str, list[dict[str, Any]]], metric: str = "test_acc") -> list[str]:
    cmp = compare_to_best(groups, metric)
    if not cmp["ranked"]:
        return ["No finished runs of the current configuration."]
    best = cmp["best"]
    m = cmp["means"][best]
    lines = [f"Highest mean {metric.replace('_', ' ')}: **{best}** ({m.fmt(100)} %, n={m.n} seeds)."]
    tied, worse = [], []
    for t, (d, p) in cmp["diffs"].items():
        text = f"{t} ({d.fmt(100)} pp, Holm p={p:.3g})"
        (worse if d.excludes(0.0) and p < 0.05 else tied).append(text)
    if worse:
        lines.append(
            "Worse than the best, paired over seeds (95% CI of the difference excludes 0 and "
            "Holm-adjusted p < 0.05): " + "; ".join(worse) + "."
        )
    if tied:
        lines.append("Not distinguishable from the best with these seeds: " + "; ".join(tied) + ".")
    diverged = {t: sum(r["outcome"] == "diverged" for r in rows) for t, rows in groups.items()}
    if any(diverged.values()):
        lines.append(
            "Diverged runs (NaN/inf or exploding loss, recorded as results): "
            + ", ".join(f"{t}: {n}/{len(groups[t])}" for t, n in diverged.items() if n)
            + "."
        )
    small = min(len(rows) for rows in groups.values())
    if small < 5:
        lines.append(
            f"With {small} seeds per technique the intervals are wide; differences below a few "
            "percentage points are not resolved. Increase `seeds` in params.yaml to narrow them."
        )
    return lines


def tuned_vs_default(default_rows: list[dict[str, Any]], tuned_rows: list[dict[str, Any]]) -> Estimate:
    return paired_diff_ci(by_seed(tuned_rows, "test_acc"), by_seed(default_rows, "test_acc"))
