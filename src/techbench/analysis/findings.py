"""What the numbers say: the configuration chosen on validation, and every other one tested against the study's
baseline on test data, paired over seeds, Holm-adjusted across all comparisons of the report, in sentences."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from techbench.analysis.convergence import convergence_line
from techbench.analysis.rows import value
from techbench.analysis.stats import Estimate, mean_ci, paired_diff_ci, paired_test

Groups = dict[str, list[dict[str, Any]]]
ALPHA = 0.05
MIN_SEEDS = 5  # below this the protocol's intervals are too wide to resolve a few points: the report says so


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


@dataclass(frozen=True)
class Comparison:
    """One configuration against the baseline of its workload, on ``metric``, paired over seeds."""

    workload: str
    label: str
    baseline: str
    diff: Estimate  # mean(label − baseline), with the interval of the adjusted level once ``adjust`` ran
    p: float  # raw two-sided p, Holm-adjusted once ``adjust`` ran
    kind: str  # "varies", "constant", "identical" or "too few" (analysis.stats.paired_test)
    m: int = 1  # comparisons in the family the p and the interval are adjusted over

    @property
    def significant(self) -> bool:
        return math.isfinite(self.p) and self.p < ALPHA


def compare(workload: str, groups: Groups, baseline: str, metric: str = "test_acc") -> list[Comparison]:
    """Each configuration of the workload against ``baseline``: unadjusted, in the groups' order."""
    if baseline not in groups:
        return []
    base = by_seed(groups[baseline], metric)
    out = []
    for label, rows in groups.items():
        if label == baseline:
            continue
        a = by_seed(rows, metric)
        p, kind = paired_test(a, base)
        out.append(Comparison(workload, label, baseline, paired_diff_ci(a, base), p, kind))
    return out


def adjust(comparisons: list[Comparison], groups_of: dict[str, Groups], metric: str = "test_acc") -> list[Comparison]:
    """Holm across every comparison given (a report's), and intervals at the Bonferroni level 1 − α/m, so an
    interval that excludes 0 is a test Holm also rejects (Holm may reject a few more)."""
    testable = [c for c in comparisons if math.isfinite(c.p)]
    m = len(testable)
    adjusted = dict(zip(map(id, testable), holm([c.p for c in testable]), strict=True)) if m else {}
    out = []
    for c in comparisons:
        if id(c) not in adjusted:
            out.append(c)
            continue
        groups = groups_of[c.workload]
        a, b = by_seed(groups[c.label], metric), by_seed(groups[c.baseline], metric)
        diff = paired_diff_ci(a, b, confidence=1 - ALPHA / m)
        out.append(replace(c, p=adjusted[id(c)], diff=diff, m=m))
    return out


def chosen_on_validation(groups: Groups) -> str | None:
    """The configuration with the highest mean validation accuracy of the weights its runs keep: the report's
    "best" is chosen where a tuner would choose it, never on test."""
    means = {t: mean_ci([r.get("val_acc") for r in rows if r.get("val_acc") is not None]) for t, rows in groups.items()}
    ranked = sorted((t for t in means if means[t].n), key=lambda t: -means[t].mean)
    return ranked[0] if ranked else None


def describe(groups: Groups, comparisons: list[Comparison], baseline: str | None) -> list[str]:
    """The sentences of one workload: the choice on validation, the baseline comparisons, divergence, seeds."""
    best = chosen_on_validation(groups)
    if best is None:
        return ["No finished runs of the current configuration."]
    val = mean_ci([r.get("val_acc") for r in groups[best] if r.get("val_acc") is not None])
    test = mean_ci([r["test_acc"] for r in groups[best] if r.get("test_acc") is not None])
    lines = [
        f"Chosen on validation: **{best}** has the highest mean validation accuracy of its kept weights "
        f"({val.fmt(100)} %, n={val.n} seeds); its test accuracy is {test.fmt(100)} %."
    ]
    if comparisons:
        lines += _against_baseline(comparisons, baseline)
    converged = convergence_line(baseline, groups[baseline]) if baseline in groups else None
    if converged:
        lines.append(converged)
    diverged = {t: sum(r["outcome"] == "diverged" for r in rows) for t, rows in groups.items()}
    if any(diverged.values()):
        lines.append(
            "Diverged runs (NaN/inf or exploding loss, recorded as results): "
            + ", ".join(f"{t}: {n}/{len(groups[t])}" for t, n in diverged.items() if n)
            + "."
        )
    small = min(len(rows) for rows in groups.values())
    if small < MIN_SEEDS:
        lines.append(
            f"With {small} seeds per configuration (fewer than {MIN_SEEDS}) the intervals are wide; differences "
            "below a few percentage points are not resolved. Increase `seeds` in params.yaml to narrow them."
        )
    return lines


def _against_baseline(comparisons: list[Comparison], baseline: str | None) -> list[str]:
    m = comparisons[0].m
    better, worse, tied, same = [], [], [], []
    for c in comparisons:
        if c.kind == "identical":
            same.append(c.label)
            continue
        note = ", the same difference on every seed" if c.kind == "constant" else ""
        text = f"{c.label} ({c.diff.fmt(100)} pp, Holm p={c.p:.3g}{note})"
        (better if c.significant and c.diff.mean > 0 else worse if c.significant else tied).append(text)
    lines = [
        f"Against the baseline `{baseline}` (test accuracy minus the baseline's, paired over seeds; p Holm-adjusted "
        f"over the report's {m} comparisons; intervals Bonferroni-simultaneous at {100 * (1 - ALPHA / m):.2f} %):"
    ]
    if better:
        lines.append("Better than the baseline (Holm p < 0.05): " + "; ".join(better) + ".")
    if worse:
        lines.append("Worse than the baseline (Holm p < 0.05): " + "; ".join(worse) + ".")
    if tied:
        lines.append("Not distinguishable from the baseline with these seeds: " + "; ".join(tied) + ".")
    if same:
        lines.append("Identical test accuracy to the baseline on every seed: " + ", ".join(same) + ".")
    return lines


def tuned_vs_default(default_rows: list[dict[str, Any]], tuned_rows: list[dict[str, Any]]) -> Estimate:
    return paired_diff_ci(by_seed(tuned_rows, "test_acc"), by_seed(default_rows, "test_acc"))
