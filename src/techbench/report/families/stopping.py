"""The stopping family's findings: where each rule stopped on the validation curve, epochs saved, and the
restored-best against the last weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from techbench.analysis.findings import by_seed
from techbench.analysis.rows import value
from techbench.analysis.stats import mean_ci, paired_diff_ci
from techbench.report.families import FindingsContext, Groups
from techbench.report.plots import plt, save_figure


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return mean_ci([v for r in rows if (v := value(r, key)) is not None]).mean


def _err(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [1.0 - r[key] for r in rows if r.get(key) is not None]


def early_stopping_lines(
    groups, path: Path, title: str, baseline: str = "fixed_budget"
) -> tuple[list[str], Path | None]:
    """Stop epoch, epochs saved, and restored-best vs last weights; the stop epochs drawn on the validation
    curve of the fixed budget (same seed: every rule sees the same curve until it stops)."""
    base = groups.get(baseline)
    if not base:
        return [], None
    lines = []
    budget = _mean(base, "epochs_run")
    for label, rows in sorted(groups.items()):
        last, best = by_seed(rows, "stop/test_acc_last"), by_seed(rows, "stop/test_acc_best")
        restored = paired_diff_ci(best, last)
        vs_full = paired_diff_ci(best, by_seed(base, "stop/test_acc_last"))
        last_vs_full = paired_diff_ci(last, by_seed(base, "stop/test_acc_last"))
        saved = 100 * _mean(rows, "stop/epochs_saved") / budget if budget else float("nan")
        fired = sum(bool(value(r, "stop/fired")) for r in rows)
        never = " (never fired: the fixed budget under another name)" if fired == 0 and label != baseline else ""
        lines.append(
            f"`{label}`: its rule fired on {fired}/{len(rows)} seeds{never}; stopped at epoch "
            f"{mean_ci([value(r, 'stop/epoch') for r in rows]).fmt(1, 1)} ({saved:.0f} % of {budget:.0f} epochs "
            f"saved); last weights − fixed budget's last {last_vs_full.fmt(100)} pp; best-validation weights − "
            f"last weights {restored.fmt(100)} pp; best weights − fixed budget's last {vs_full.fmt(100)} pp."
        )
    lines += _same_restored(groups)
    seed0 = next((r for r in base if r["seed"] == 0), base[0])
    val = seed0["curves"].get("val/loss") or []
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(range(1, len(val) + 1), val, "k-", lw=1.2, label="fixed budget, validation loss")
    colors = plt.get_cmap("tab10")
    for i, (label, rows) in enumerate(sorted(groups.items())):
        r0 = next((r for r in rows if r["seed"] == seed0["seed"]), None)
        if r0 is None or label == baseline or value(r0, "stop/epoch") is None:
            continue
        e = int(value(r0, "stop/epoch"))
        ax.axvline(e, color=colors(i % 10), ls="--", lw=1, label=f"{label} stops ({e})")
    if value(seed0, "stop/best_epoch"):
        ax.plot([value(seed0, "stop/best_epoch")], [min(val)], "r*", ms=12, label="lowest validation loss")
    ax.set(xlabel="epoch", ylabel="validation loss", title=f"{title}: where each rule stops (seed {seed0['seed']})")
    ax.legend(fontsize=6, loc="upper right")
    return lines, save_figure(fig, path)


def _same_restored(groups: Groups) -> list[str]:
    """Rules that restore the same best-validation epoch on every seed report the same test numbers: one
    finding, said once; they differ only in when they stop (compute) and in their last weights."""
    by_epochs: dict[tuple, list[str]] = {}
    for label, rows in sorted(groups.items()):
        key = tuple(sorted((r["seed"], value(r, "stop/best_epoch")) for r in rows))
        by_epochs.setdefault(key, []).append(label)
    return [
        f"{', '.join(f'`{lb}`' for lb in same)} restore the same best-validation epoch on every seed: their "
        f"restored-weight test numbers are one result, not {len(same)}; compare them on the epoch they stop "
        "and on their last weights."
        for same in by_epochs.values()
        if len(same) > 1
    ]


def findings(groups: Groups, ctx: FindingsContext) -> tuple[list[str], list[Path]]:
    lines, fig = early_stopping_lines(groups, ctx.figure("_stops.png"), ctx.title, ctx.default or "fixed_budget")
    return lines, [fig] if fig else []
