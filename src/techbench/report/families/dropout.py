"""The dropout family's findings: convergence against no dropout, Monte-Carlo against deterministic
prediction, and the rates concrete dropout learned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from techbench.analysis.findings import by_seed
from techbench.analysis.rows import value
from techbench.analysis.stats import mean_ci, paired_diff_ci
from techbench.report.families import FindingsContext, Groups


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return mean_ci([v for r in rows if (v := value(r, key)) is not None]).mean


def _err(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [1.0 - r[key] for r in rows if r.get(key) is not None]


def dropout_lines(groups, baseline: str = "none") -> list[str]:
    """Convergence (epochs to the target) against no dropout, MC-dropout against the same network's
    deterministic prediction, and the rates concrete dropout learned."""
    lines = []
    base = groups.get(baseline)
    if base and any(r.get("epochs_to_target") is not None for r in base):
        for label, rows in sorted(groups.items()):
            if label == baseline:
                continue
            d = paired_diff_ci(by_seed(rows, "epochs_to_target"), by_seed(base, "epochs_to_target"))
            if d.n:
                lines.append(f"`{label}` − none, epochs to the validation target: {d.fmt(1, 1)} (paired seeds).")
    for label, rows in sorted(groups.items()):
        if any(value(r, "mc/test_acc") is not None for r in rows):
            acc = paired_diff_ci(by_seed(rows, "mc/test_acc"), by_seed(rows, "test_acc"))
            nll = paired_diff_ci(by_seed(rows, "mc/test_nll"), by_seed(rows, "test_loss"))
            ece = paired_diff_ci(by_seed(rows, "mc/test_ece"), by_seed(rows, "calibration/ece"))
            lines.append(
                f"`{label}`: MC average − deterministic (weight-scaled) prediction of the same network: accuracy "
                f"{acc.fmt(100)} pp, NLL {nll.fmt(1, 3)}, ECE {ece.fmt(1, 3)}."
            )
        rates = [r["learned_p"] for r in rows if r.get("learned_p")]
        if rates:
            layers = sorted(rates[0])
            learned = ", ".join(f"{k} {mean_ci([r[k] for r in rates]).fmt(1, 3)}" for k in layers)
            lines.append(f"`{label}` learned dropout rates (mean ± CI over seeds): {learned}.")
    return lines


def findings(groups: Groups, ctx: FindingsContext) -> tuple[list[str], list[Path]]:
    return dropout_lines(groups, ctx.default or "none"), []
