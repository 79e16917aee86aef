"""Report sections of the generalization studies: the capacity curve with its bias²/variance decomposition,
the best λ of each penalty chosen on validation data, where each stopping rule stopped, and what dropout
does to convergence and calibration. Each function returns sentences/sections built from runs.json rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from techbench.analysis.findings import by_seed
from techbench.analysis.stats import mean_ci, paired_diff_ci
from techbench.report.plots import plt, save_figure


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return mean_ci([r.get(key) for r in rows if r.get(key) is not None]).mean


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
    if all(bv):
        b2, var = [d["bias2"] for d in bv], [d["variance"] for d in bv]
        axes[0, 1].plot(x, b2, "o-", label="bias² (Brier)")
        axes[0, 1].plot(x, var, "s-", label="variance over seeds")
        axes[0, 1].plot(x, [d["error"] for d in bv], "k--", label="expected error = bias² + variance")
        axes[0, 1].set(xscale="log", xlabel=axis, title="decomposition of the test Brier error")
        axes[0, 1].legend(fontsize=7)
        lines.append(
            f"Decomposition over {int(bv[0]['runs'])} seeds (squared error of the predicted probabilities; bias² "
            f"includes the label noise): Spearman ρ(bias², {axis}) = {stats.spearmanr(x, b2).statistic:.2f}, "
            f"ρ(variance, {axis}) = {stats.spearmanr(x, var).statistic:.2f} ("
            + (
                "more data: variance should fall"
                if data_axis
                else "the chapter: bias falls and variance rises with complexity"
            )
            + "). "
            + "; ".join(f"`{lb}` {d['bias2']:.3f} + {d['variance']:.3f}" for lb, d in zip(labels, bv, strict=True))
            + "."
        )
    fig.suptitle(f"{title}: mean over seeds")
    return lines, save_figure(fig, path)


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


def regularization_lines(groups) -> list[str]:
    """Each penalty at the λ with the best mean final validation accuracy (test accuracy is never used to
    choose), its weight norm and sparsity, against no penalty."""
    by_tech: dict[str, list[str]] = {}
    for label in groups:
        by_tech.setdefault(label.split("@")[0], []).append(label)
    base = groups.get("none")
    lines = []
    for tech, labels in sorted(by_tech.items()):
        chosen = max(labels, key=lambda lb: _mean(groups[lb], "final_val_acc"))
        rows = groups[chosen]
        text = (
            f"`{tech}`: chosen on validation `{chosen}`, test acc {mean_ci([r['test_acc'] for r in rows]).fmt(100)} %, "
            f"‖W‖ {_mean(rows, 'weights_l2'):.2f}, exact zeros {100 * _mean(rows, 'zero_frac'):.2f} %, "
            f"|w| < 1e-3 {100 * _mean(rows, 'near_zero_frac'):.1f} %"
        )
        if base and tech != "none":
            d = paired_diff_ci(by_seed(rows, "test_acc"), by_seed(base, "test_acc"))
            text += f"; vs none {d.fmt(100)} pp"
        lines.append(text + ".")
        if len(labels) >= 3:
            lam = [float(lb.split("lam=")[1]) for lb in labels if "lam=" in lb]
            if len(lam) == len(labels):
                norms = [_mean(groups[lb], "weights_l2") for lb in labels]
                rho = stats.spearmanr(lam, norms).statistic
                lines.append(f"`{tech}` λ sweep: Spearman ρ(‖W‖, λ) = {rho:.2f} over {len(labels)} values.")
    return ["Best λ per penalty (selected on validation accuracy, reported on test):", *lines]


def early_stopping_lines(groups, path: Path, title: str) -> tuple[list[str], Path | None]:
    """Stop epoch, epochs saved, and restored-best vs last weights; the stop epochs drawn on the validation
    curve of the fixed budget (same seed: every rule sees the same curve until it stops)."""
    base = groups.get("fixed_budget")
    if not base:
        return [], None
    lines = []
    budget = _mean(base, "epochs_run")
    for label, rows in sorted(groups.items()):
        last, best = by_seed(rows, "test_acc_last"), by_seed(rows, "test_acc_best")
        restored = paired_diff_ci(best, last)
        vs_full = paired_diff_ci(best, by_seed(base, "test_acc_last"))
        saved = 100 * _mean(rows, "epochs_saved") / budget if budget else float("nan")
        lines.append(
            f"`{label}`: stopped at epoch {mean_ci([r.get('stop_epoch') for r in rows]).fmt(1, 1)} "
            f"({saved:.0f} % of {budget:.0f} epochs saved); best-validation weights − last weights "
            f"{restored.fmt(100)} pp; best weights − fixed budget's last {vs_full.fmt(100)} pp."
        )
    seed0 = next((r for r in base if r["seed"] == 0), base[0])
    val = seed0["curves"].get("val/loss") or []
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(range(1, len(val) + 1), val, "k-", lw=1.2, label="fixed budget, validation loss")
    colors = plt.get_cmap("tab10")
    for i, (label, rows) in enumerate(sorted(groups.items())):
        r0 = next((r for r in rows if r["seed"] == seed0["seed"]), None)
        if r0 is None or label == "fixed_budget" or r0.get("stop_epoch") is None:
            continue
        e = int(r0["stop_epoch"])
        ax.axvline(e, color=colors(i % 10), ls="--", lw=1, label=f"{label} stops ({e})")
    if seed0.get("stop_best_epoch"):
        ax.plot([seed0["stop_best_epoch"]], [min(val)], "r*", ms=12, label="lowest validation loss")
    ax.set(xlabel="epoch", ylabel="validation loss", title=f"{title}: where each rule stops (seed {seed0['seed']})")
    ax.legend(fontsize=6, loc="upper right")
    return lines, save_figure(fig, path)


def dropout_lines(groups) -> list[str]:
    """Convergence (epochs to the target) against no dropout, MC-dropout against the same network's
    deterministic prediction, and the rates concrete dropout learned."""
    lines = []
    base = groups.get("none")
    if base and any(r.get("epochs_to_target") is not None for r in base):
        for label, rows in sorted(groups.items()):
            if label == "none":
                continue
            d = paired_diff_ci(by_seed(rows, "epochs_to_target"), by_seed(base, "epochs_to_target"))
            if d.n:
                lines.append(f"`{label}` − none, epochs to the validation target: {d.fmt(1, 1)} (paired seeds).")
    for label, rows in sorted(groups.items()):
        if any(r.get("mc_acc") is not None for r in rows):
            acc = paired_diff_ci(by_seed(rows, "mc_acc"), by_seed(rows, "test_acc"))
            nll = paired_diff_ci(by_seed(rows, "mc_nll"), by_seed(rows, "test_loss"))
            ece = paired_diff_ci(by_seed(rows, "mc_ece"), by_seed(rows, "ece"))
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
