"""The transfer family's findings per target workload: what starting from the source bought over scratch, whether
fine-tuning beat the frozen backbone (the chapter's C52: it should at larger target sets, not at the smallest),
and what each strategy cost the source task (forgetting) for how much of the model it trained."""

from __future__ import annotations

from pathlib import Path

from techbench.analysis.findings import by_seed
from techbench.analysis.rows import value
from techbench.analysis.stats import mean_ci, paired_diff_ci
from techbench.report.families import FindingsContext, Groups

FROZEN = "feature_extraction"
FINE_TUNED = ("deep_ft", "shallow_ft", "l2_sp", "discriminative_lr", "gradual_unfreeze", "lp_ft", "bitfit")


def _diff(groups: Groups, a: str, b: str) -> str:
    d = paired_diff_ci(by_seed(groups[a], "test_acc"), by_seed(groups[b], "test_acc"))
    verdict = "higher" if d.excludes(0) and d.mean > 0 else "lower" if d.excludes(0) else "not distinguishable"
    return f"`{a}` − `{b}`: {d.fmt(100, 1)} pp test accuracy, paired over {d.n} seeds ({verdict}, unadjusted CI)"


def _mean(groups: Groups, label: str, key: str) -> float | None:
    est = mean_ci([v for r in groups[label] if (v := value(r, key)) is not None])
    return est.mean if est.n else None


def findings(groups: Groups, ctx: FindingsContext) -> tuple[list[str], list[Path]]:
    lines = []
    n_train = {round(v) for rows in groups.values() for r in rows if (v := r.get("n_train")) is not None}
    if n_train:
        lines.append(f"Target training examples: {', '.join(str(n) for n in sorted(n_train))} (drawn per seed).")
    if "scratch" in groups:
        for label in [FROZEN, "deep_ft"]:
            if label in groups:
                lines.append(_diff(groups, label, "scratch") + ".")
    if FROZEN in groups:
        tuned = [t for t in FINE_TUNED if t in groups]
        if tuned:
            best = max(tuned, key=lambda t: _mean(groups, t, "val_acc") or 0.0)
            lines.append(f"Best fine-tuning strategy on validation: `{best}`; {_diff(groups, best, FROZEN)}.")
    costs = []
    for label in groups:
        share, forgot = _mean(groups, label, "transfer/trainable_frac"), _mean(groups, label, "transfer/forgetting")
        if forgot is not None and share is not None:
            costs.append(f"`{label}` {100 * share:.1f} % trained, source accuracy −{100 * forgot:.1f} pp")
    if costs:
        lines.append(
            "Trainable share and forgetting (source test accuracy lost, source classifier restored): "
            + "; ".join(costs)
            + "."
        )
    return lines, []
