"""Report sections of the restart studies: the spread of the solutions a procedure trains, best-of-N selection,
restart ensembles, perturbation procedures (ILS, basin hopping, ...), snapshot ensembles, initialization schemes,
restart scheduling against plain random restarts, and every procedure's compute next to its kept accuracy.

Everything is built from runs.json rows of the `restarts` family (analysis/results.summarize_run): ``members``
({metric: [value per trained solution]}), ``procedure`` ({measure: value}), ``procedure_curves``
({name: [value at n = index + 1]}), ``compute_epochs`` and the kept solution's ``test_acc``. Labels are
``technique`` or ``technique@variant``; the technique (before ``@``) decides which section a label joins, and
techniques absent from ``groups`` are skipped. Sentences never contain ``|`` (they go into markdown tables'
neighbourhood unescaped)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from techbench.analysis.stats import mean_ci, paired_diff_ci
from techbench.report.families import FindingsContext, Groups
from techbench.report.families.restarts_common import (
    curve_at,
    curve_by_seed,
    either,
    mean_curve,
    member_mean,
    members,
    pct,
    per_seed,
    random_like,
    tech,
)
from techbench.report.families.restarts_compute import did_nothing_lines, equal_compute_lines
from techbench.report.families.restarts_procedures import (
    init_lines,
    perturbation_lines,
    scheduling_lines,
    snapshot_lines,
)
from techbench.report.plots import plt, save_figure


# Procedures that train independent solutions and keep the best on validation: their members are i.i.d. draws.
def findings(groups: Groups, ctx: FindingsContext) -> tuple[list[str], list[Path]]:
    """Sentences for "What the numbers say" and the figures (``<stem>_restarts*.png``) of a restart study."""
    groups = {label: rows for label, rows in groups.items() if rows}
    lines: list[str] = []
    figures: list[Path] = []
    for part in (distribution, selection_and_ensembles):
        text, fig = part(groups, ctx)
        lines += text
        figures += [fig] if fig else []
    for part in (
        equal_compute_lines,
        did_nothing_lines,
        perturbation_lines,
        snapshot_lines,
        init_lines,
        scheduling_lines,
    ):
        lines += part(groups, ctx)
    text, fig = compute(groups, ctx)
    lines += text
    figures += [fig] if fig else []
    return [line.replace("|", "/") for line in lines], figures


# --- the spread of the trained solutions ------------------------------------------------------------------------------


def distribution(groups: Groups, ctx: FindingsContext) -> tuple[list[str], Path | None]:
    """Box plus strip plot of every trained solution's final validation loss and accuracy per label; the median
    and best of the random-restart-like procedures."""
    labels = [lb for lb in sorted(groups) if members(groups[lb], "val_loss")]
    if not labels:
        return [], None
    lines = []
    for label in labels:
        rows = groups[label]
        if not random_like(ctx.techniques.get(tech(label), {})):  # init_* schemes: their own sentences
            continue
        loss, acc = members(rows, "val_loss"), members(rows, "val_acc")
        text = (
            f"`{label}`: final validation loss over its {len(loss)} trained solutions ({len(rows)} seeds): "
            f"median {np.median(loss):.4f}, best {min(loss):.4f}, worst {max(loss):.4f}"
        )
        if acc:
            text += f"; validation accuracy median {pct(float(np.median(acc)))}, best {pct(max(acc))}"
        lines.append(text + ".")
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.1 * len(labels) + 3), 3.8))
    rng = np.random.default_rng(0)  # jitter of the strip plot only
    for ax, key, name in ((axes[0], "val_loss", "final validation loss"), (axes[1], "val_acc", "final validation acc")):
        data = [members(groups[lb], key) for lb in labels]
        for p, d in enumerate(data, start=1):
            if not d:
                continue
            # One call per label: a list of equal-length lists would be read as a 2-D array, split by columns.
            ax.boxplot(np.asarray(d), positions=[p], widths=0.6, showfliers=False)
            ax.plot(p + rng.uniform(-0.18, 0.18, len(d)), d, "o", ms=3, alpha=0.5, color="C0")
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=45, ha="right", fontsize=7)
        ax.set(ylabel=name, title=f"{name}: every trained solution")
    fig.suptitle(f"{ctx.stem.name}: solutions of all seeds")
    return lines, save_figure(fig, ctx.figure("_restarts.png"))


# --- best-of-N and restart ensembles ----------------------------------------------------------------------------------


def selection_and_ensembles(groups: Groups, ctx: FindingsContext) -> tuple[list[str], Path | None]:
    lines = []
    panels = {
        "expected_best_of_n": ("best of N on validation: test acc (%)", 100.0),
        "ensemble_acc": ("ensemble test accuracy (%)", 100.0),
        "ensemble_nll": ("ensemble test NLL", 1.0),
    }
    curves = {key: {lb: c for lb in sorted(groups) if (c := mean_curve(groups[lb], key)) is not None} for key in panels}
    for label, c in curves["expected_best_of_n"].items():
        rows = groups[label]
        gain = paired_diff_ci(
            curve_by_seed(rows, "expected_best_of_n", len(c) - 1), curve_by_seed(rows, "expected_best_of_n", 0)
        )
        lines.append(
            f"`{label}`: expected test accuracy of the restart selected on validation, best of 1 → best of "
            f"{len(c)}: {pct(c[0])} → {pct(c[-1])} (gain paired over seeds {gain.fmt(100)} pp)."
        )
    for label, acc in curves["ensemble_acc"].items():
        rows = groups[label]
        n = len(acc)
        full = curve_by_seed(rows, "ensemble_acc", n - 1)
        single = per_seed(rows, lambda r: either(member_mean(r, "test_acc"), curve_at(r, "ensemble_acc", 0)))
        d = paired_diff_ci(full, single)
        text = (
            f"`{label}`: ensemble of {n} restarts (averaged probabilities) test accuracy {pct(acc[-1])} vs "
            f"{pct(mean_ci(list(single.values())).mean)} for the mean single member: gain {d.fmt(100)} pp "
            "(paired over seeds)"
        )
        nll = curves["ensemble_nll"].get(label)
        if nll is not None:
            m = len(nll)
            full_nll = curve_by_seed(rows, "ensemble_nll", m - 1)
            single_nll = per_seed(rows, lambda r: either(member_mean(r, "test_loss"), curve_at(r, "ensemble_nll", 0)))
            dn = paired_diff_ci(full_nll, single_nll)
            text += f"; NLL {nll[0]:.4f} (1 member) → {nll[-1]:.4f} ({m}), full ensemble − mean member {dn.fmt(1, 4)}"
        lines.append(text + ".")
    present = [k for k in panels if curves[k]]
    if not present:
        return lines, None
    fig, axes = plt.subplots(1, len(present), figsize=(4.6 * len(present), 3.6), squeeze=False)
    for ax, key in zip(axes[0], present, strict=True):
        name, scale = panels[key]
        for i, (label, c) in enumerate(curves[key].items()):
            ax.plot(np.arange(1, len(c) + 1), scale * c, "o-", ms=3, color=f"C{i % 10}", label=label)
        ax.set(xlabel="number of restarts N", title=name)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=6)
    fig.suptitle(f"{ctx.stem.name}: mean over seeds")
    return lines, save_figure(fig, ctx.figure("_restarts_curves.png"))


# --- compute against quality ------------------------------------------------------------------------------------------


def compute(groups: Groups, ctx: FindingsContext) -> tuple[list[str], Path | None]:
    """Every label's epochs trained (all solutions) next to its kept test accuracy; a scatter of the two."""
    entries = []
    for label, rows in groups.items():
        epochs = mean_ci([r.get("compute_epochs") for r in rows if r.get("compute_epochs") is not None])
        acc = mean_ci([r.get("test_acc") for r in rows if r.get("test_acc") is not None])
        if epochs.n and acc.n:
            entries.append((label, epochs, acc))
    if not entries:
        return [], None
    entries.sort(key=lambda e: (e[1].mean, e[0]))
    lines = [
        "Compute (epochs trained over all solutions, mean over seeds) and the kept solution's test accuracy: "
        + "; ".join(f"`{lb}` {ep.mean:.1f} epochs, {acc.fmt(100)} %" for lb, ep, acc in entries)
        + "."
    ]
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (label, ep, acc) in enumerate(entries):
        hw = acc.half_width if math.isfinite(acc.half_width) else 0.0
        ax.errorbar([ep.mean], [100 * acc.mean], yerr=[100 * hw], fmt="o", color=f"C{i % 10}", label=label)
    ax.set(xlabel="epochs trained (all solutions)", ylabel="kept test accuracy (%)")
    ax.set_title(f"{ctx.stem.name}: cost vs quality")
    ax.legend(fontsize=6)
    return lines, save_figure(fig, ctx.figure("_restarts_compute.png"))
