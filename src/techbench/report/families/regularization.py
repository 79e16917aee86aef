"""The regularization family's findings: the capacity curve (train / validation / test error against model
or data size) with its bias²/variance decomposition, and the best λ of each penalty chosen on validation data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from techbench.analysis.findings import by_seed
from techbench.analysis.rows import value
from techbench.analysis.stats import mean_ci, paired_diff_ci
from techbench.report.families import FindingsContext, Groups
from techbench.report.families.regularization_claims import capacity_claim, penalty_claims
from techbench.report.plots import plt, save_figure


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return mean_ci([v for r in rows if (v := value(r, key)) is not None]).mean


def _err(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [1.0 - r[key] for r in rows if r.get(key) is not None]


def _capacity_x(groups: dict[str, list[dict[str, Any]]]) -> tuple[str, dict[str, float]]:
    """The capacity axis of a sweep: training examples if the variants differ in them, else parameters."""
    n_train = {label: _mean(rows, "n_train") for label, rows in groups.items()}
    if len({round(v) for v in n_train.values() if np.isfinite(v)}) > 1:
        return "training examples", n_train
    return "parameters", {label: _mean(rows, "n_params") for label, rows in groups.items()}


def capacity_sections(groups, decomposition: dict[str, Any], path: Path, title: str) -> tuple[list[str], Path | None]:
    """Train / validation / test error against capacity, and bias² / variance where predictions were saved."""
    if len(groups) < 3 or any(r["outcome"] == "diverged" for rows in groups.values() for r in rows):
        return [], None
    axis, xs = _capacity_x(groups)
    labels = sorted(groups, key=lambda lb: xs[lb])
    x = np.array([xs[lb] for lb in labels])
    curves = {
        "train error": [mean_ci(_err(groups[lb], "train_final_acc")).mean for lb in labels],
        "validation error (final)": [mean_ci(_err(groups[lb], "final_val_acc")).mean for lb in labels],
        "test error": [mean_ci(_err(groups[lb], "test_acc")).mean for lb in labels],
    }
    bv = [decomposition.get(lb) for lb in labels]
    fig, axes = plt.subplots(1, 2 if all(bv) else 1, figsize=(10 if all(bv) else 5.5, 3.6), squeeze=False)
    for name, ys in curves.items():
        axes[0, 0].plot(x, ys, "o-", label=name)
    axes[0, 0].set(xscale="log", xlabel=axis, ylabel="error", title="error vs capacity")
    axes[0, 0].legend(fontsize=7)
    lines = []
    rho_train = stats.spearmanr(x, curves["train error"]).statistic
    best = int(np.nanargmin(curves["validation error (final)"]))
    data_axis = axis == "training examples"
    expect = (
        "more examples are harder to memorize, so train error may rise while validation error falls"
        if data_axis
        else "the chapter: train error falls as capacity grows"
    )
    lines.append(
        f"Capacity axis: {axis}. Train error vs {axis}: Spearman ρ = {rho_train:.2f} ({expect}). Lowest final "
        f"validation error at `{labels[best]}` ({100 * curves['validation error (final)'][best]:.1f} %)."
    )
    if best < len(labels) - 1:
        d = paired_diff_ci(by_seed(groups[labels[-1]], "test_acc"), by_seed(groups[labels[best]], "test_acc"))
        where = "overfitting region: larger models are worse" if d.excludes(0) and d.mean < 0 else "no clear rise"
        lines.append(
            f"Largest (`{labels[-1]}`) − best-validation capacity, test accuracy paired by seed: "
            f"{d.fmt(100)} pp ({where})."
        )
    else:
        lines.append("Validation error is lowest at the largest capacity tried: no overfitting region in this range.")
    if not data_axis:
        lines.append(capacity_claim(groups, labels, curves))
    if all(bv):
        lines.append(_decomposition(axes[0, 1], x, labels, bv, axis, data_axis))
    fig.suptitle(f"{title}: mean over seeds")
    return lines, save_figure(fig, path)


def _decomposition(ax, x, labels: list[str], bv: list[dict[str, Any]], axis: str, data_axis: bool) -> str:
    """Bias² and variance against capacity (drawn on ``ax``), and the sentence that reads them."""
    b2, var = [d["bias2"] for d in bv], [d["variance"] for d in bv]
    ax.plot(x, b2, "o-", label="bias² (Brier)")
    ax.plot(x, var, "s-", label="variance over seeds")
    ax.plot(x, [d["brier"] for d in bv], "k--", label="expected error = bias² + variance")
    ax.set(xscale="log", xlabel=axis, title="decomposition of the test Brier error")
    ax.legend(fontsize=7)
    expect = (
        "more data: variance should fall" if data_axis else "the chapter: bias falls and variance rises with complexity"
    )
    parts = "; ".join(f"`{lb}` {d['bias2']:.3f} + {d['variance']:.3f}" for lb, d in zip(labels, bv, strict=True))
    return (
        f"Decomposition over {int(bv[0]['runs'])} seeds (squared error of the predicted probabilities; bias² "
        f"includes the label noise): Spearman ρ(bias², {axis}) = {stats.spearmanr(x, b2).statistic:.2f}, "
        f"ρ(variance, {axis}) = {stats.spearmanr(x, var).statistic:.2f} ({expect}). {parts}."
    )


def decomposition_lines(decomposition: dict[str, Any]) -> list[str]:
    """The bias² + variance of each sweep point, for sweeps too short for the capacity curve."""
    if not decomposition:
        return []
    parts = "; ".join(f"`{lb}` {d['bias2']:.3f} + {d['variance']:.3f}" for lb, d in sorted(decomposition.items()))
    return [f"Test Brier error = bias² + variance over seeds (too few sweep points for a capacity curve): {parts}."]


def paired_variant_lines(groups) -> list[str]:
    """Two variants of one switch (e.g. shuffle_seq false/true): their paired test-accuracy difference."""
    if len(groups) != 2:
        return []
    a, b = sorted(groups)
    d = paired_diff_ci(by_seed(groups[b], "test_acc"), by_seed(groups[a], "test_acc"))
    return [f"`{b}` − `{a}`, test accuracy paired by seed: {d.fmt(100)} pp."]


def regularization_lines(groups, baseline: str = "none") -> list[str]:
    """Each penalty at the λ with the best mean final validation accuracy (test accuracy is never used to
    choose), its weight norm and sparsity, against no penalty."""
    by_tech: dict[str, list[str]] = {}
    for label in groups:
        by_tech.setdefault(label.split("@")[0], []).append(label)
    base = groups.get(baseline)
    lines = []
    for tech, labels in sorted(by_tech.items()):
        chosen = max(labels, key=lambda lb: _mean(groups[lb], "val_acc"))
        rows = groups[chosen]
        text = (
            f"`{tech}`: chosen on validation `{chosen}`, test acc {mean_ci([r['test_acc'] for r in rows]).fmt(100)} %, "
            f"‖W‖ {_mean(rows, 'weights/l2_norm'):.2f}, exact zeros {100 * _mean(rows, 'weights/zero_frac'):.2f} %, "
            f"|w| < 1e-3 {100 * _mean(rows, 'weights/near_zero_frac'):.1f} %"
        )
        if base and tech != baseline:
            d = paired_diff_ci(by_seed(rows, "test_acc"), by_seed(base, "test_acc"))
            text += f"; vs {baseline} {d.fmt(100)} pp"
        lines.append(text + ".")
        if len(labels) >= 3:
            lam = [_sweep_value(groups[lb], "lam") for lb in labels]
            if all(v is not None for v in lam):
                norms = [_mean(groups[lb], "weights/l2_norm") for lb in labels]
                rho = stats.spearmanr(lam, norms).statistic
                lines.append(f"`{tech}` λ sweep: Spearman ρ(‖W‖, λ) = {rho:.2f} over {len(labels)} values.")
    return [
        "Best λ per penalty (selected on validation accuracy, reported on test):",
        *lines,
        *penalty_claims(groups, baseline),
    ]


def _sweep_value(rows: list[dict[str, Any]], hp: str) -> float | None:
    """The swept value of ``hp`` of a group (its rows share one sweep point), if the point sets it."""
    point = rows[0].get("sweep") or {}
    values = [v for k, v in point.items() if k.rsplit(".", 1)[-1] == hp]
    return float(values[0]) if values else None


def findings(groups: Groups, ctx: FindingsContext) -> tuple[list[str], list[Path]]:
    """Best λ per penalty; or, for a study of `none` alone swept over model or data, the capacity curve."""
    baseline = ctx.default or "none"
    if not all(rows[0]["technique"] == baseline for rows in groups.values() if rows):
        return regularization_lines(groups, baseline), []
    lines, fig = capacity_sections(groups, ctx.bias_variance, ctx.figure("_capacity.png"), ctx.title)
    if not lines:
        lines = paired_variant_lines(groups) + decomposition_lines(ctx.bias_variance)
    return lines, [fig] if fig else []
