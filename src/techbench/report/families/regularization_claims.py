"""The chapter's claims about capacity and penalties, decided on the regularization family's groups.

C14: train error falls with capacity while validation error is U-shaped (parameter axes only). C17: an L2 sweep
shrinks ‖W‖, makes almost no exact zeros, peaks inside the sweep and, at its largest λ, underfits. C18 (b): L1
trained by subgradient steps makes ≥ 10 % exact zeros at a validation accuracy matched to L2's (the proximal
variant is reported beside it: it is not a (sub)gradient method). C21: L2 on the biases too changes test
accuracy by less than 0.5 pp (two one-sided tests).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from techbench.analysis.findings import by_seed
from techbench.analysis.stats import equivalent, paired_diff_ci
from techbench.report.claims import Verdict, decide
from techbench.report.families import Groups, mean_of

NORM, ZEROS = "weights/l2_norm", "weights/zero_frac"


def capacity_claim(groups: Groups, labels: list[str], curves: dict[str, list[float]]) -> Verdict:
    """C14 over ``labels`` sorted by parameters, with the mean train / final-validation error ``curves``."""
    train, val = curves["train error"], curves["validation error (final)"]
    rho = stats.spearmanr(np.arange(len(labels)), train).statistic
    best = int(np.nanargmin(val))
    rise = paired_diff_ci(by_seed(groups[labels[best]], "final_val_acc"), by_seed(groups[labels[-1]], "final_val_acc"))
    gap = [t - v for t, v in zip(val, train, strict=True)]  # validation − train error: the generalization gap
    u_shaped = best < len(labels) - 1 and rise.excludes(0) and rise.mean > 0
    evidence = (
        f"ρ(train error, capacity) = {rho:.2f} (rule ≤ −0.9); lowest validation error at `{labels[best]}`, largest "
        f"capacity {rise.fmt(100, 1)} pp more validation error; gap at the smallest {100 * gap[0]:.1f} pp vs "
        f"{100 * gap[best]:.1f} pp at the validation minimum."
    )
    holds = rho <= -0.9 and u_shaped and gap[0] < gap[best]
    return decide("C14", holds, rho > -0.9 or best == len(labels) - 1, evidence)


def _sweep_lam(rows: list[dict[str, Any]]) -> float | None:
    values = [v for k, v in (rows[0].get("sweep") or {}).items() if k.rsplit(".", 1)[-1] == "lam"]
    return float(values[0]) if values else None


def _chosen(groups: Groups, tech: str) -> str | None:
    labels = [lb for lb in groups if lb.split("@")[0] == tech]
    return max(labels, key=lambda lb: mean_of(groups[lb], "val_acc") or 0.0) if labels else None


def l2_sweep_claim(groups: Groups, baseline: str = "none") -> Verdict | None:
    """C17: the L2 sweep points, with the unpenalized baseline as λ = 0."""
    sweep = sorted((lam, lb) for lb in groups if lb.startswith("l2@") and (lam := _sweep_lam(groups[lb])) is not None)
    if len(sweep) < 3 or baseline not in groups:
        return None
    labels = [baseline] + [lb for _, lb in sweep]
    lams = [0.0] + [lam for lam, _ in sweep]
    rho = stats.spearmanr(lams, [mean_of(groups[lb], NORM) for lb in labels]).statistic
    zeros = max(mean_of(groups[lb], ZEROS) or 0.0 for lb in labels[1:])
    val = [mean_of(groups[lb], "val_acc") for lb in labels]
    peak = int(np.argmax(val))
    drop = paired_diff_ci(by_seed(groups[baseline], "train_final_acc"), by_seed(groups[labels[-1]], "train_final_acc"))
    evidence = (
        f"λ ∈ {{0, {', '.join(f'{v:g}' for v in lams[1:])}}}: ρ(‖W‖, λ) = {rho:.2f} (rule ≤ −0.95); at most "
        f"{100 * zeros:.2f} % exact zeros (rule < 1 %); validation accuracy peaks at λ = {lams[peak]:g} "
        f"({'inside' if 0 < peak < len(labels) - 1 else 'at an end of'} the sweep); train accuracy at λ = "
        f"{lams[-1]:g} is {drop.fmt(100, 1)} pp below λ = 0 (rule ≥ 10 pp)."
    )
    holds = rho <= -0.95 and zeros < 0.01 and 0 < peak < len(labels) - 1 and drop.mean >= 0.10
    return decide("C17", holds, rho > -0.95 or zeros >= 0.01, evidence)


def l1_zeros_claim(groups: Groups) -> Verdict | None:
    """C18 (b): subgradient L1 at its validation-chosen λ against L2 at its own."""
    l1, l2 = _chosen(groups, "l1"), _chosen(groups, "l2")
    if not l1 or not l2:
        return None
    zeros = mean_of(groups[l1], ZEROS) or 0.0
    near = mean_of(groups[l1], "weights/near_zero_frac") or 0.0
    matched = paired_diff_ci(by_seed(groups[l1], "val_acc"), by_seed(groups[l2], "val_acc"))
    prox = _chosen(groups, "l1_proximal")
    beside = f"; proximal L1 (`{prox}`) {100 * (mean_of(groups[prox], ZEROS) or 0.0):.1f} %" if prox else ""
    evidence = (
        f"Exact zeros at `{l1}` {100 * zeros:.2f} % (rule ≥ 10 %; |w| < 1e-3: {100 * near:.1f} %) vs "
        f"{100 * (mean_of(groups[l2], ZEROS) or 0.0):.2f} % at `{l2}`, validation accuracy L1 − L2 "
        f"{matched.fmt(100, 1)} pp{beside}."
    )
    within = matched.n > 1 and abs(matched.mean) <= 0.01
    return decide("C18", zeros >= 0.10 and within, zeros < 0.10, evidence)


def bias_penalty_claim(groups: Groups) -> Verdict | None:
    """C21: L2 on every parameter (at its validation-chosen λ) against L2 on weights only."""
    l2 = _chosen(groups, "l2")
    if not l2 or "l2_no_bias" not in groups:
        return None
    same, differ, d90 = equivalent(by_seed(groups[l2], "test_acc"), by_seed(groups["l2_no_bias"], "test_acc"), 0.005)
    evidence = f"`{l2}` − `l2_no_bias` test accuracy {d90.fmt(100, 2)} pp (90 % CI; equivalence margin ±0.5 pp)."
    return decide("C21", same, differ, evidence)


def penalty_claims(groups: Groups, baseline: str) -> list[Verdict]:
    return [v for v in (l2_sweep_claim(groups, baseline), l1_zeros_claim(groups), bias_penalty_claim(groups)) if v]
