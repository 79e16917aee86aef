"""The "Across workloads" section of a study with a target on two or more workloads: performance profiles of
time to target (Kaplan-Meier median seconds and epochs over seeds, analysis/target.py) and their AlgoPerf-style
scores, with the profile plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from techbench.analysis.profiles import TAU_MAX, profile, ratios, score
from techbench.analysis.rows import label
from techbench.analysis.target import to_target
from techbench.report.document import Section, Table
from techbench.report.plots import plt, save_figure

UNITS = {"seconds": "wall seconds", "epochs": "epochs"}


def _times(runs: list[dict[str, Any]], unit: str) -> dict[str, dict[str, float | None]]:
    by: dict[str, dict[str, list]] = {}
    for r in runs:
        if "epochs_to_target" in r:
            by.setdefault(r["workload"], {}).setdefault(label(r), []).append(r)
    return {w: {lab: to_target(rows, unit)[2] for lab, rows in per.items()} for w, per in by.items()}


def profile_section(runs: list[dict[str, Any]], path: Path, title: str) -> Section | None:
    per_unit = {unit: ratios(_times(runs, unit)) for unit in UNITS}
    r = per_unit["seconds"]
    if len(r) < 2 or not next(iter(r.values())):
        return None
    labels = sorted(next(iter(r.values())), key=lambda lab: -score(r, lab))
    sec = Section(
        "Across workloads: performance profiles",
        paragraphs=[
            f"Time to each workload's target (Kaplan-Meier median over seeds) relative to the fastest technique "
            f"on that workload; ρ(τ) = share of the {len(r)} workloads within a factor τ of the fastest; score = "
            f"area under ρ over log τ in [1, {TAU_MAX:g}] (AlgoPerf; 1 = fastest on every workload, unreached "
            "targets count as infinitely slow). Wall seconds include each technique's real cost per update; "
            "epochs do not (an L-BFGS or full-batch epoch is not a mini-batch epoch)."
        ],
    )
    rows = []
    for lab in labels:
        rows.append(
            [lab]
            + [f"{score(per_unit[u], lab):.3f}" for u in UNITS]
            + [f"{sum(np.isfinite(per[lab]) for per in r.values())}/{len(r)}"]
        )
    sec.tables.append(Table(["technique", "score (seconds)", "score (epochs)", "targets reached"], rows))
    sec.figures.append(_plot(r, labels, path, title))
    return sec


def _plot(r: dict[str, dict[str, float]], labels: list[str], path: Path, title: str) -> Path:
    taus = np.exp(np.linspace(0.0, np.log(TAU_MAX), 200))
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    colors = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    for i, lab in enumerate(labels):
        ax.step(taus, [profile(r, lab, t) for t in taus], where="post", label=lab, color=colors(i), lw=1.4)
    ax.set(xscale="log", xlabel="τ (time to target / fastest)", ylabel="ρ(τ): share of workloads", ylim=(-0.02, 1.02))
    ax.set_title(f"{title}: performance profiles (wall seconds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2, loc="lower right")
    return save_figure(fig, path)
