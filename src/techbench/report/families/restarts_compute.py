"""Restart procedures at equal compute: each procedure against the single run trained for about the same total
epochs (the study sweeps `single.epochs`), paired by seed; and the runs in which a procedure did nothing (no
restart made, no perturbation accepted), which are the single run by another name and are labelled so."""

from __future__ import annotations

from techbench.analysis.stats import mean_ci, paired_diff_ci
from techbench.report.families import FindingsContext, Groups
from techbench.report.families.restarts_common import per_seed, proc, tech
from techbench.report.families.restarts_common import value as field

TOLERANCE = 0.1  # a single run within 10 % of a procedure's epochs counts as equal compute


def _compute(rows) -> float:
    return mean_ci([r.get("compute_epochs") for r in rows if r.get("compute_epochs") is not None]).mean


def equal_compute_lines(groups: Groups, ctx: FindingsContext) -> list[str]:
    """Procedure − single run of the same total epochs, test accuracy paired by seed."""
    singles = {label: _compute(rows) for label, rows in groups.items() if tech(label) == "single"}
    if not singles:
        return []
    lines = []
    for label, rows in sorted(groups.items()):
        if tech(label) == "single":
            continue
        spent = _compute(rows)
        match = min(singles, key=lambda s: abs(singles[s] - spent))
        if not abs(singles[match] - spent) <= TOLERANCE * spent:
            lines.append(
                f"`{label}` ({spent:.0f} epochs) has no single run of equal compute "
                f"(single runs: {', '.join(f'{v:.0f}' for v in sorted(singles.values()))} epochs)."
            )
            continue
        diff = paired_diff_ci(per_seed(rows, field("test_acc")), per_seed(groups[match], field("test_acc")))
        verdict = (
            "better" if diff.excludes(0.0) and diff.mean > 0 else "worse" if diff.excludes(0.0) else "no different"
        )
        lines.append(
            f"`{label}` vs `{match}` at equal compute ({spent:.0f} vs {singles[match]:.0f} epochs): test accuracy "
            f"{diff.fmt(100)} pp (paired over {diff.n} seeds, unadjusted 95 % CI): {verdict}."
        )
    return lines


def did_nothing_lines(groups: Groups, ctx: FindingsContext) -> list[str]:
    """Seeds on which a procedure made no restart or accepted no perturbation: its kept solution is the first."""
    lines = []
    for label, rows in sorted(groups.items()):
        idle = [r["seed"] for r in rows if proc(r, "restarts_made") == 0 or proc(r, "accept_rate") == 0]
        if idle:
            lines.append(
                f"`{label}` did nothing on {len(idle)}/{len(rows)} seeds (no restart made or none accepted): "
                "there it is the single run under another name."
            )
    return lines
