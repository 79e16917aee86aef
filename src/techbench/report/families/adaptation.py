"""The adaptation family's findings per shift: every method's target test accuracy under each selection rule
(source validation, the labelled-target ORACLE, the last epoch, target entropy), paired against source_only under
the same rule; how much of the gap to the labelled target reference each method closes; how much of a gain
the oracle's choice adds (selection, not adaptation); and the domain discrepancy of the kept features."""

from __future__ import annotations

from pathlib import Path

from techbench.analysis.findings import by_seed
from techbench.analysis.stats import mean_ci, paired_diff_ci
from techbench.report.families import FindingsContext, Groups, mean_of

BASE, REFERENCE = "source_only", "target_supervised"
RULES = {
    "source_val": "source validation",
    "target_val": "ORACLE target validation",
    "last": "last epoch",
    "entropy": "target entropy",
}


def _acc(rule: str) -> str:
    return f"select/{rule}/test_acc"


def findings(groups: Groups, ctx: FindingsContext) -> tuple[list[str], list[Path]]:
    if not any(mean_of(rows, _acc("last")) is not None for rows in groups.values()):
        return [], []
    lines = [
        "Target test accuracy (%) by selection rule, mean ± 95% CI over seeds; no rule reads a target test label; "
        "the ORACLE rule uses labelled target validation data, which unsupervised adaptation does not have."
    ]
    methods = [m for m in groups if m not in (BASE, REFERENCE)]
    for rule, name in RULES.items():
        cells = []
        for label, rows in groups.items():
            est = mean_ci(by_seed(rows, _acc(rule)).values())
            cell = f"`{label}` {est.fmt(100, 1)}"
            if label != BASE and BASE in groups:
                d = paired_diff_ci(by_seed(rows, _acc(rule)), by_seed(groups[BASE], _acc(rule)))
                cell += f" ({d.fmt(100, 1)} pp vs {BASE}, {d.direction()})"
            cells.append(cell)
        lines.append(f"Chosen by {name}: " + "; ".join(cells) + ".")
    if BASE in groups and REFERENCE in groups:
        lines.append(_gap_closed(groups, methods))
    peeks = []
    for label in methods:
        d = paired_diff_ci(by_seed(groups[label], _acc("target_val")), by_seed(groups[label], _acc("source_val")))
        if d.n:
            peeks.append(f"`{label}` {d.fmt(100, 1)} pp")
    if peeks:
        lines.append(
            "What the oracle's choice adds over choosing on source validation (same runs, paired by seed): "
            + "; ".join(peeks)
            + "."
        )
    dist = [
        f"`{label}` {a:.2f}" for label, rows in groups.items() if (a := mean_of(rows, "adapt/a_distance")) is not None
    ]
    if dist:
        lines.append(
            "Proxy A-distance between source and target validation features of the kept weights (0 = a linear "
            "domain classifier does no better than chance, 2 = it separates them): " + "; ".join(dist) + "."
        )
    return lines, []


def _gap_closed(groups: Groups, methods: list[str]) -> str:
    base = mean_of(groups[BASE], _acc("source_val"))
    top = mean_of(groups[REFERENCE], _acc("source_val"))
    if base is None or top is None or top <= base:
        return (
            f"The labelled target reference (`{REFERENCE}`) is not above `{BASE}` here, so no gap to close is defined."
        )
    means = {m: mean_of(groups[m], _acc("source_val")) for m in methods}
    parts = [f"`{m}` {100 * (v - base) / (top - base):.0f} %" for m, v in means.items() if v is not None]
    return (
        f"Share of the gap from `{BASE}` ({100 * base:.1f} %) to `{REFERENCE}` ({100 * top:.1f} %) closed, "
        "source-validation choice: " + "; ".join(parts) + "."
    )
