"""Views of the gradient-computation probes (probes/gradient_*.py): a bar per row label and metric, the memory
of checkpointing against depth, and the sentences that compare each method with its reference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib import ticker

from techbench.analysis.stats import mean_ci
from techbench.report.plots import plt, save_figure
from techbench.report.probes.views import view

# ---- helpers ---------------------------------------------------------------------------------------------------


def values(results: list[dict], row: str, metric: str) -> list[float]:
    return [r[metric] for res in results for r in res["rows"] if r.get("row") == row and metric in r]


def row_labels(results: list[dict], metric: str) -> list[str]:
    labels: list[str] = []
    for res in results:
        labels += [r["row"] for r in res["rows"] if metric in r and r["row"] not in labels]
    return labels


def fmt_ci(vals: list[float], spec: str = ".3g") -> str:
    est = mean_ci(vals)
    if est.n < 2 or not math.isfinite(est.half_width):
        return f"{est.mean:{spec}}"
    return f"{est.mean:{spec}} (95% CI {est.low:{spec}}–{est.high:{spec}}, {est.n} seeds)"


def bar_plot(results: list[dict], path: Path, metrics: list[str], title: str, log: bool = False, ref: float = 1.0):
    """One panel per metric: a bar per row label, mean over seeds with a 95% CI error bar."""
    metrics = [m for m in metrics if row_labels(results, m)]
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.0 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        labels = row_labels(results, metric)
        ests = [mean_ci(values(results, lab, metric)) for lab in labels]
        errs = [e.half_width if math.isfinite(e.half_width) else 0.0 for e in ests]
        ax.bar(range(len(labels)), [e.mean for e in ests], yerr=errs, capsize=3, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
        if ref is not None and metric.startswith(("speedup", "ratio", "time_ratio", "mem")):
            ax.axhline(ref, color="k", lw=0.8, ls="--")
        ax.set_yscale("log" if log else "linear")
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{title}: mean over seeds, bars = 95% CI", fontsize=10)
    return save_figure(fig, path)


def _bars(metrics: list[str], title: str, log: bool = False):
    """The plot of a probe whose figure is ``bar_plot`` of these metrics."""
    return lambda results, path: bar_plot(results, path, metrics, title, log=log)


# ---- per-example loop vs batched gradient (gradient_computation.py) -----------------------------------------


def _largest_batch(labels: list[str]) -> list[str]:
    """The labels ('<method> B=<b> threads=<t>') of the largest batch size: the claim's setting."""
    size = {lab: int(lab.split("B=")[1].split()[0]) for lab in labels}
    return [lab for lab in labels if size[lab] == max(size.values(), default=0)]


def _vectorization_verdict(results: list[dict]) -> list[str]:
    out = []
    for label in _largest_batch(row_labels(results, "speedup_vs_loop")):
        if label.startswith("batched"):
            setting = label.removeprefix("batched ")
            out.append(
                f"{setting}: the batched gradient is {fmt_ci(values(results, label, 'speedup_vs_loop'))}× faster "
                f"than the per-example loop, vmap {fmt_ci(values(results, 'vmap ' + setting, 'speedup_vs_loop'))}×; "
                f"max relative gradient difference {max(values(results, label, 'rel_grad_diff')):.1e}."
            )
    return out


def _loop_verdict(results: list[dict]) -> list[str]:
    return [
        f"{lab}: {fmt_ci([1e3 * v for v in values(results, lab, 'seconds')])} ms per averaged gradient "
        f"({fmt_ci(values(results, lab, 'us_per_example'))} µs per example); the batched gradient matches it to "
        f"{max(values(results, lab, 'rel_grad_diff_batched_vs_loop')):.1e} (max relative)."
        for lab in _largest_batch(row_labels(results, "rel_grad_diff_batched_vs_loop"))
    ]


# ---- forward vs reverse mode, gradient check (gradient_autodiff.py) --------------------------------------------


def _mode_verdict(mode: str):
    other = "reverse" if mode == "forward" else "forward"

    def verdict(results: list[dict]) -> list[str]:
        out = []
        for label in row_labels(results, f"time_ratio_vs_{other}"):
            ratio = values(results, label, f"time_ratio_vs_{other}")
            out.append(
                f"{label}: {mode} mode takes {fmt_ci([1e3 * s for s in values(results, label, 'seconds')])} ms, "
                f"{fmt_ci(ratio)}× the {other}-mode time; Jacobians agree to "
                f"{max(values(results, label, 'jacobian_rel_diff')):.1e}."
            )
        return out

    return verdict


def _gradcheck_verdict(results: list[dict]) -> list[str]:
    out = []
    for act in row_labels(results, "manual_vs_autograd"):
        fd = ", ".join(
            f"{fmt_ci(values(results, lab, 'fd_max_rel_err'))} at {lab.removeprefix(act + ' ')}"
            for lab in row_labels(results, "fd_max_rel_err")
            if lab.startswith(act + " ")
        )
        out.append(
            f"{act}: max relative error of autograd vs finite differences {fd}; the chapter's equations by hand "
            f"match autograd to {max(values(results, act, 'manual_vs_autograd')):.1e}, δ(L) = softmax(z) − y to "
            f"{max(values(results, act, 'delta_out_vs_autograd')):.1e}."
        )
    return out


# ---- backprop vs finite-difference cost (gradient_cost.py) -----------------------------------------------------


def _cost_verdict(results: list[dict]) -> list[str]:
    labels = row_labels(results, "backward_over_forward")
    ratios = ", ".join(f"{fmt_ci(values(results, lab, 'backward_over_forward'), '.2f')} at {lab}" for lab in labels)
    out = [f"Backward / forward time: {ratios}."]
    fd = values(results, "scaling in P", "fd_time_exponent")
    if fd:
        out.append(
            f"Finite-difference time grows as P^{fmt_ci(fd, '.2f')} (backprop: "
            f"P^{fmt_ci(values(results, 'scaling in P', 'backward_time_exponent'), '.2f')} over all sizes)."
        )
    return out


# ---- checkpointing and accumulation (gradient_memory.py) -------------------------------------------------------


def _checkpoint_verdict(results: list[dict]) -> list[str]:
    big = row_labels(results, "act_ratio")[-1:]

    def exponent(key: str) -> str:
        return fmt_ci(values(results, "scaling in n", key), ".2f")

    out = [
        f"Activation memory grows as n^{exponent('act_exponent_plain')} without checkpointing and "
        f"n^{exponent('act_exponent_ckpt')} with √n segments (O(n) → 1, O(√n) → 0.5); between the two largest "
        f"depths n^{exponent('act_exponent_plain_top')} and n^{exponent('act_exponent_ckpt_top')}."
    ]
    for lab in big:
        out.append(
            f"At {lab}: activation memory ×{fmt_ci(values(results, lab, 'act_ratio'), '.2f')}, whole-step peak "
            f"×{fmt_ci(values(results, lab, 'peak_ratio'), '.2f')} (parameters and gradients do not shrink), step "
            f"time ×{fmt_ci(values(results, lab, 'time_ratio'), '.2f')}; gradients equal to "
            f"{max(values(results, lab, 'rel_grad_diff')):.0e}."
        )
    return out


def _checkpoint_plot(results: list[dict], path: Path) -> Path | None:
    curves = [r["curves"] for r in results if r.get("curves")]
    if not curves:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (key, title) in zip(axes, (("act_mb", "activation memory"), ("peak_mb", "whole-step peak")), strict=True):
        x = np.array(curves[0][key]["x"], dtype=float)
        for tag, color, slope in (("plain", "tab:red", 1.0), ("ckpt", "tab:blue", 0.5)):
            y = np.mean([c[key][tag] for c in curves], axis=0)
            ax.plot(x, y, "o-", color=color, label="checkpointed (√n segments)" if tag == "ckpt" else "plain")
            ax.plot(x, y[0] * (x / x[0]) ** slope, color=color, ls=":", lw=0.8, label=f"∝ n^{slope:g}")
        ax.set(xscale="log", yscale="log", xlabel="depth n (blocks)", ylabel="MB", title=title)
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        for fmt in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            fmt(ticker.FormatStrFormatter("%.3g"))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle("gradient checkpointing: memory vs depth, mean over seeds", fontsize=10)
    return save_figure(fig, path)


def _accumulation_verdict(results: list[dict]) -> list[str]:
    return [
        f"{lab}: gradient equals the single batch's to {max(values(results, lab, 'rel_grad_diff')):.1e} "
        f"(params after float64 training to {max(values(results, lab, 'rel_param_diff_fp64')):.1e}); activation "
        f"memory ×{fmt_ci(values(results, lab, 'act_ratio_vs_k1'), '.2f')}, time per effective step "
        f"×{fmt_ci(values(results, lab, 'time_ratio_vs_k1'), '.2f')} of k=1."
        for lab in row_labels(results, "act_ratio_vs_k1")[1:]
    ]


# ---- mixed precision (gradient_precision.py) -------------------------------------------------------------------


def _precision_verdict(results: list[dict]) -> list[str]:
    out = []
    for lab in row_labels(results, "speedup_vs_fp32"):
        out.append(
            f"{lab} runs a training step {fmt_ci(values(results, lab, 'speedup_vs_fp32'), '.2f')}× as fast as "
            f"float32 (> 1 = faster); test accuracy differs by {fmt_ci(values(results, lab, 'acc_diff_pp'), '.2f')} "
            f"pp."
        )
    for lab in row_labels(results, "share_scaled"):
        out.append(
            f"float16 backward loses {fmt_ci(values(results, lab, 'share_unscaled'), '.2g')} of the nonzero "
            f"gradient entries without loss scaling and {fmt_ci(values(results, lab, 'share_scaled'), '.2g')} with it."
        )
    return out


view("per_example_loop", plot=_bars(["seconds"], "per-example loop", log=True), verdict=_loop_verdict)
view("vectorized", plot=_bars(["speedup_vs_loop", "seconds"], "vectorized", log=True), verdict=_vectorization_verdict)
_mode_plot = _bars(["seconds"], "Jacobian time by function (log scale)", log=True)
view("forward_mode", plot=_mode_plot, verdict=_mode_verdict("forward"))
view("reverse_mode", plot=_mode_plot, verdict=_mode_verdict("reverse"))
view(
    "gradient_check",
    plot=_bars(["fd_max_rel_err", "manual_vs_autograd", "delta_out_vs_autograd"], "gradient check", log=True),
    verdict=_gradcheck_verdict,
)
view(
    "backprop_cost",
    plot=_bars(["backward_over_forward", "forward_ms", "fd_ms"], "backprop cost by model size"),
    verdict=_cost_verdict,
)
view("grad_checkpointing", plot=_checkpoint_plot, verdict=_checkpoint_verdict)
view(
    "grad_accumulation",
    plot=_bars(["act_mb", "step_ms", "rel_grad_diff"], "gradient accumulation (k micro-batches)"),
    verdict=_accumulation_verdict,
)
view(
    "mixed_precision",
    plot=_bars(["speedup_vs_fp32", "acc_diff_pp", "step_ms"], "mixed precision vs float32"),
    verdict=_precision_verdict,
)
