"""View of mode_connectivity (probes/mode_connectivity.py): loss and accuracy along the straight line between
two trained solutions for the two pairs, and whether each pair is linearly connected across seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from techbench.analysis.stats import mean_ci, paired_diff_ci
from techbench.report.plots import plt
from techbench.report.probes.views import view

# The probe's two pairs of solutions (its result rows and curves are keyed by these names).
PAIRS = {
    "different_init": "two initializations (new_model 0 and 1), batch orders 0 and 1",
    "same_init": "one initialization (new_model 0), batch orders 0 and 1",
}


def plot(results: list[dict[str, Any]], path: Path) -> Path | None:
    if not results:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = (("train_loss", "train loss"), ("test_loss", "test loss"), ("test_acc", "test accuracy"))
    for ax, (key, name) in zip(axes, panels, strict=True):
        for i, pair in enumerate(PAIRS):
            curves = [res["curves"][pair] for res in results if pair in res["curves"]]
            if not curves:
                continue
            for cur in curves:  # every seed, faint
                ax.plot(cur["x"], cur[key], "-", color=f"C{i}", alpha=0.25, lw=0.8)
            n = min(len(c[key]) for c in curves)
            mean = np.mean([c[key][:n] for c in curves], axis=0)
            ax.plot(curves[0]["x"][:n], mean, "o-", ms=3, color=f"C{i}", label=f"{pair} (mean of {len(curves)})")
        ax.set(xlabel="α  (θ = (1 − α)θ_a + αθ_b)", ylabel=name, title=f"{name} along the line")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _finding(diff: dict[int, dict[str, Any]], same: dict[int, dict[str, Any]]) -> str:
    kd, ks = sum(int(r["connected"]) for r in diff.values()), sum(int(r["connected"]) for r in same.values())
    nd, ns = len(diff), len(same)
    if kd == 0 and ks == ns:
        return (
            "solutions from different initializations are separated by a loss barrier, while one "
            "initialization trained with two batch orders stays in one linearly connected basin, in every seed"
        )
    if kd == nd and ks == ns:
        return (
            "both pairs are linearly connected in every seed: even independently initialized solutions lie on "
            "a barrier-free line here (for a convex loss, such as logreg's, that always holds)"
        )
    if kd == 0 and ks == 0:
        return "neither pair is linearly connected in any seed: the batch order alone already leads across a barrier"
    return (
        f"different initializations are linearly connected in {kd} of {nd} seeds and the same "
        f"initialization in {ks} of {ns}: no clean separation"
    )


def verdict(results: list[dict[str, Any]]) -> list[str]:
    by_pair: dict[str, dict[int, dict[str, Any]]] = {}
    for i, res in enumerate(results):
        for row in res["rows"]:
            by_pair.setdefault(row["row"], {})[res.get("seed", i)] = row
    out = []
    for pair, text in PAIRS.items():
        rows = list(by_pair.get(pair, {}).values())
        if not rows:
            continue
        bt, bs = mean_ci([r["barrier_train"] for r in rows]), mean_ci([r["barrier_test"] for r in rows])
        rel = mean_ci([r["rel_barrier_train"] for r in rows])
        k = sum(int(r["connected"]) for r in rows)
        out.append(
            f"{pair} ({text}): loss barrier on the line {bt.fmt(1, 4)} train, {bs.fmt(1, 4)} test "
            f"(mean ± CI over {len(rows)} seeds; train barrier {rel.fmt(100, 1)} % of the endpoints' mean train "
            f"loss); linearly connected (train barrier at most {rows[0]['tolerance']:g} × that loss) in {k} of "
            f"{len(rows)} seeds."
        )
    diff, same = by_pair.get("different_init", {}), by_pair.get("same_init", {})
    if diff and same:
        d = paired_diff_ci(
            {s: r["barrier_train"] for s, r in diff.items()}, {s: r["barrier_train"] for s, r in same.items()}
        )
        out.append(
            f"Found: {_finding(diff, same)}. Train barrier, different − same initialization paired by seed: "
            f"{d.fmt(1, 4)}."
        )
    return out


view("mode_connectivity", plot=plot, verdict=verdict)
