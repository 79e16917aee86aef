"""The "Tuning budgets" section: every tuned technique at the registry defaults (one_shot: the study's own runs)
and at each tuning budget (the best trial of the budget's first n trials, re-run over the evaluation seeds), the
gain over the defaults paired by seed, the stability of the ranking across budgets (Kendall's τ), and the
Crowded-Valley-style picture of test accuracy per technique and budget."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from techbench.analysis.findings import tuned_vs_default
from techbench.analysis.stats import mean_ci
from techbench.report.document import Section, Table
from techbench.report.plots import plt, save_figure

Groups = dict[str, list[dict[str, Any]]]
ONE_SHOT = "one_shot"


def budgets_of(info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """budget -> its result; a summary written before budgets existed is one budget "tuned"."""
    if "budgets" in info:
        return info["budgets"]
    keys = ("best_params", "best_val_acc", "runs")
    return {"tuned": {"trials": info["trials"], "best_trial": None, **{k: info.get(k) for k in keys}}}


def _num(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _acc(rows: list[dict[str, Any]]):
    return mean_ci([r["test_acc"] for r in rows if r.get("test_acc") is not None])


def tuning_section(tuning: dict[str, Any], groups: Groups, figure: Path, title: str) -> Section:
    names = list(dict.fromkeys(b for info in tuning.values() for b in budgets_of(info)))
    sec = Section("Tuning budgets")
    sec.paragraphs.append(
        "Each tuned technique: an Optuna search over its declared space (objective: validation accuracy of the "
        "kept weights; median pruning), trained with a seed outside the evaluation seeds. A budget of n trials is "
        "the first n trials of one study (no trial depends on later ones); its best trial is re-run over the "
        f"evaluation seeds and compared on test, paired by seed, with `{ONE_SHOT}` (the registry defaults, the "
        "study's own runs). Budgets: " + ", ".join(f"{b} = {_trials(tuning, b)} trials" for b in names) + "."
    )
    headers = ["technique", f"{ONE_SHOT} test acc %"]
    for b in names:
        headers += [f"{b} test acc %", f"{b} − {ONE_SHOT} (pp)", f"{b} choice"]
    headers += ["trials (pruned)", "Optuna study"]
    rows = []
    for t, info in tuning.items():
        row = [t, _acc(groups.get(t, [])).fmt(100)]
        for b in names:
            got = budgets_of(info).get(b)
            if not got or not got.get("runs"):
                row += ["–", "–", "–"]
                continue
            chosen = ", ".join(f"{k}={_num(v)}" for k, v in (got.get("best_params") or {}).items())
            trial = f"trial {got['best_trial']}: " if got.get("best_trial") is not None else ""
            row += [
                _acc(got["runs"]).fmt(100),
                tuned_vs_default(groups.get(t, []), got["runs"]).fmt(100),
                f"{trial}{chosen} (val {100 * got['best_val_acc']:.1f} %)",
            ]
        rows.append(row + [f"{info['trials']} ({info['pruned']} pruned)", f"`{info['optuna_study']}`"])
    sec.tables.append(Table(headers, rows))
    sec.paragraphs += _stability(tuning, groups, names)
    sec.figures.append(_plot(tuning, groups, names, figure, title))
    return sec


def _trials(tuning: dict[str, Any], budget: str) -> int:
    return max(budgets_of(info).get(budget, {}).get("trials") or 0 for info in tuning.values())


def _means(tuning: dict[str, Any], groups: Groups, names: list[str]) -> dict[str, dict[str, float]]:
    """budget (one_shot first) -> technique -> mean test accuracy, for the techniques every budget has."""
    out = {ONE_SHOT: {t: _acc(groups.get(t, [])).mean for t in tuning}}
    for b in names:
        out[b] = {t: _acc(budgets_of(info).get(b, {}).get("runs") or []).mean for t, info in tuning.items()}
    common = [t for t in tuning if all(math.isfinite(out[b].get(t, math.nan)) for b in out)]
    return {b: {t: per[t] for t in common} for b, per in out.items()}


def _stability(tuning: dict[str, Any], groups: Groups, names: list[str]) -> list[str]:
    means = _means(tuning, groups, names)
    techniques = list(next(iter(means.values())))
    if len(techniques) < 3:
        return []
    parts = []
    for a, b in itertools.combinations(means, 2):
        tau = stats.kendalltau([means[a][t] for t in techniques], [means[b][t] for t in techniques]).statistic
        parts.append(f"{a} vs {b} τ = {tau:.2f}")
    order = {b: " > ".join(sorted(techniques, key=lambda t: -means[b][t])) for b in means}
    return [
        "Ranking by mean test accuracy at each budget: " + "; ".join(f"{b}: {o}" for b, o in order.items()) + ".",
        "Stability of the ranking across budgets (Kendall's τ over "
        f"{len(techniques)} techniques; 1 = the same order): " + "; ".join(parts) + ".",
    ]


def _plot(tuning: dict[str, Any], groups: Groups, names: list[str], path: Path, title: str) -> Path:
    techniques = list(tuning)
    budgets = [ONE_SHOT, *names]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(techniques) + 2.5), 3.6))
    width = 0.8 / len(budgets)
    for j, b in enumerate(budgets):
        xs, ys, errs = [], [], []
        for i, t in enumerate(techniques):
            rows = groups.get(t, []) if b == ONE_SHOT else budgets_of(tuning[t]).get(b, {}).get("runs") or []
            est = _acc(rows)
            if est.n:
                xs.append(i + (j - (len(budgets) - 1) / 2) * width)
                ys.append(100 * est.mean)
                errs.append(100 * est.half_width if math.isfinite(est.half_width) else 0.0)
        ax.errorbar(xs, ys, yerr=errs, fmt="o", capsize=3, label=b)
    ax.set_xticks(np.arange(len(techniques)), techniques, rotation=30, ha="right")
    ax.set(ylabel="test accuracy % (mean ± 95% CI)", title=f"{title}: test accuracy by tuning budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
