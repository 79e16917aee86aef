"""Across target sizes (the chapter's C52: fine-tuning overtakes feature extraction as the labelled target set
grows): for the workloads of a study named ``<shift>_n<size>`` (one target shift at several sizes), accuracy
against the target-set size per strategy, and per fine-tuning strategy its paired difference to the frozen
backbone at each size, where it crosses zero, and how the advantage moves with the size (Spearman ρ)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from techbench.analysis.findings import by_seed
from techbench.analysis.rows import label
from techbench.analysis.stats import mean_ci, paired_diff_ci
from techbench.report.claims import Verdict, decide, say
from techbench.report.document import Section
from techbench.report.families.transfer_peft import FROZEN
from techbench.report.plots import plt, save_figure, style

SIZE = re.compile(r"^(?P<shift>.+)_n(?P<n>\d+)$")
SMALL, LARGE = 200, 2000  # C52's "a few hundred" and "thousands" of target examples


def by_size(runs: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, list[dict]]]]:
    """shift -> size -> label -> rows, for shifts with two or more sizes."""
    out: dict[str, dict[int, dict[str, list[dict]]]] = {}
    for r in runs:
        m = SIZE.match(r["workload"])
        if m:
            out.setdefault(m["shift"], {}).setdefault(int(m["n"]), {}).setdefault(label(r), []).append(r)
    return {s: sizes for s, sizes in out.items() if len(sizes) >= 2}


def size_section(results, figures: Path) -> Section | None:
    shifts = by_size(results.runs)
    if not shifts:
        return None
    fine_tuned = [t for t, info in results.techniques.items() if info.get("source") and t != FROZEN]
    sec = Section("Across target sizes: fine-tuning vs the frozen backbone")
    for shift, sizes in shifts.items():
        ns = sorted(sizes)
        sec.paragraphs.append(f"`{shift}` at {', '.join(str(n) for n in ns)} target examples:")
        for ft in fine_tuned:
            if all(ft in sizes[n] and FROZEN in sizes[n] for n in ns):
                say(sec, [_crossover(ft, sizes, ns)])
    sec.figures.append(_figure(shifts, figures / f"{results.study}_target_sizes.png", results.study))
    return sec


def _crossover(ft: str, sizes: dict[int, dict[str, list[dict]]], ns: list[int]) -> Verdict:
    diffs = {n: paired_diff_ci(by_seed(sizes[n][ft], "test_acc"), by_seed(sizes[n][FROZEN], "test_acc")) for n in ns}
    parts = [f"n={n}: {d.fmt(100, 1)} pp" for n, d in diffs.items()]
    above = [n for n, d in diffs.items() if d.excludes(0) and d.mean > 0]
    cross = f"above the frozen backbone (CI) from n={above[0]}" if above else f"never above it (CI) up to n={ns[-1]}"
    rho, r = "", float("nan")
    if len(ns) >= 3:
        r = stats.spearmanr(ns, [diffs[n].mean for n in ns]).statistic
        rho = f"; Spearman ρ(advantage, n) = {r:.2f} over {len(ns)} sizes (rule: > 0.8)"
    small = [d for n, d in diffs.items() if n <= SMALL]
    large = [d for n, d in diffs.items() if n >= LARGE]
    small_ok = bool(small) and all(d.high <= 0.005 for d in small)  # (frozen − FT) CI lower bound ≥ −0.5 pp
    large_ok = bool(large) and all(d.low > 0 for d in large)
    verdict = []
    if small:
        verdict.append(
            f"at n ≤ {SMALL} the CI rules out fine-tuning ahead by > 0.5 pp (supported)"
            if small_ok
            else f"at n ≤ {SMALL} the CI allows fine-tuning ahead by > 0.5 pp (not supported)"
        )
    verdict.append(
        f"at n ≥ {LARGE} fine-tuning is {'above (CI; supported)' if large_ok else 'not above'}"
        if large
        else f'no size ≥ {LARGE} here, so the chapter\'s "fine-tuning wins with thousands" is not tested'
    )
    fails = any(d.low > 0.005 for d in small) or any(d.high < 0 for d in large) or r < 0
    evidence = f"`{ft}` − `{FROZEN}`: {'; '.join(parts)} — {cross}{rho}; {'; '.join(verdict)}."
    return decide("C52", small_ok and large_ok and r > 0.8, fails, evidence)


def _figure(shifts: dict[str, dict[int, dict[str, list[dict]]]], path: Path, title: str) -> Path:
    fig, axes = plt.subplots(1, len(shifts), figsize=(5 * len(shifts), 3.8), squeeze=False)
    for ax, (shift, sizes) in zip(axes[0], shifts.items(), strict=True):
        ns = sorted(sizes)
        labels = list(dict.fromkeys(lab for n in ns for lab in sizes[n]))
        for i, lab in enumerate(labels):
            est = [mean_ci([r["test_acc"] for r in sizes[n].get(lab, [])]) for n in ns]
            mean = np.array([100 * e.mean for e in est])
            half = np.array([100 * e.half_width if np.isfinite(e.half_width) else 0.0 for e in est])
            ax.errorbar(ns, mean, yerr=half, label=lab, capsize=3, marker="o", ms=3, **style(i))
        ax.set(xscale="log", xlabel="labelled target examples", ylabel="test accuracy (%)", title=f"{title} / {shift}")
        ax.legend(fontsize=7)
    return save_figure(fig, path)
