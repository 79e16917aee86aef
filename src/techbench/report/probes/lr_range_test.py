"""View of the LR range test (probes/lr_range_test.py): each seed's smoothed loss against the LR with its three
readings marked, and the suggested LR over seeds next to the other readings and the study's own LR."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from techbench.report.plots import plt
from techbench.report.probes.views import view


def _finite(values: list[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def plot(results: list[dict[str, Any]], path: Path) -> Path | None:
    if not results:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    starts = []
    for i, res in enumerate(results):
        curve, row = res["curves"]["lr_range_test"], res["rows"][0]
        line = ax.plot(curve["x"], curve["loss"], lw=1.2, label=f"seed {res.get('seed', i)}")[0]
        starts += _finite(curve["loss"][:1])
        for key, style in (("suggested_lr", "--"), ("steepest_lr", "-."), ("min_loss_lr_div10", ":")):
            if _finite([row.get(key)]):
                ax.axvline(row[key], color=line.get_color(), ls=style, lw=0.9)
    if starts:
        # Diverged losses grow by orders of magnitude; the interesting part is below the starting loss.
        ax.set_ylim(top=1.5 * max(starts))
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title("LR range test: -- Lightning's suggestion, -. steepest (log LR), : min-loss LR / 10", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def verdict(results: list[dict[str, Any]]) -> list[str]:
    rows = [res["rows"][0] for res in results if res.get("rows")]
    suggested = _finite([r.get("suggested_lr") for r in rows])
    if not suggested:
        return ["The LR range test gave no suggestion (too few finite losses: raise num_training or max_lr)."]
    n = len(suggested)
    out = [
        f"The LR range test suggests an LR of {statistics.geometric_mean(suggested):.3g} (Lightning's suggestion, "
        f"geometric mean over {n} seed{'s' if n > 1 else ''}, range {min(suggested):.3g}–{max(suggested):.3g})."
    ]
    steep = _finite([r.get("steepest_lr") for r in rows])
    div10 = _finite([r.get("min_loss_lr_div10") for r in rows])
    configured = _finite([r.get("configured_lr") for r in rows])
    others = [f"steepest descent against log LR {statistics.geometric_mean(steep):.3g}"] if steep else []
    others += [f"min-loss LR / 10 {statistics.geometric_mean(div10):.3g}"] if div10 else []
    others += [f"the study's optimizer uses {configured[0]:.3g}"] if configured else []
    if others:
        out.append("For comparison: " + "; ".join(others) + ".")
    return out


view("lr_range_test", plot=plot, verdict=verdict)
