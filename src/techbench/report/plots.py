"""Learning curves: per-epoch mean over seeds with a 95% CI band."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from techbench.analysis.stats import mean_ci  # noqa: E402

PANELS = [
    ("train/loss", "train loss", True),
    ("val/loss", "validation loss", True),
    ("val/acc", "validation accuracy", False),
    ("lr", "learning rate", True),
]


STYLES = ("-", "--", ":", "-.")  # with tab10's colours: 40 configurations drawn apart


def style(i: int) -> dict[str, Any]:
    return {"color": plt.get_cmap("tab10")(i % 10), "linestyle": STYLES[(i // 10) % len(STYLES)]}


def save_figure(fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # keeps a legend placed outside the axes
    plt.close(fig)
    return path


def _band(rows: list[dict[str, Any]], key: str):
    curves = [r["curves"].get(key) or [] for r in rows]
    length = max((len(c) for c in curves), default=0)
    mean, low, high = [], [], []
    for e in range(length):
        est = mean_ci([c[e] for c in curves if e < len(c)])
        mean.append(est.mean)
        hw = est.half_width if np.isfinite(est.half_width) else 0.0
        low.append(est.mean - hw)
        high.append(est.mean + hw)
    return np.arange(1, length + 1), np.array(mean), np.array(low), np.array(high)


def learning_curves(groups: dict[str, list[dict[str, Any]]], path: Path, title: str) -> Path:
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4))
    for i, (label, rows) in enumerate(sorted(groups.items())):
        for ax, (key, _, _) in zip(axes, PANELS, strict=True):
            x, mean, low, high = _band(rows, key)
            if len(x) == 0:
                continue
            ax.plot(x, mean, label=label, lw=1.5, **style(i))
            ax.fill_between(x, low, high, color=style(i)["color"], alpha=0.12, lw=0)
    for ax, (_, name, log) in zip(axes, PANELS, strict=True):
        ax.set_xlabel("epoch")
        ax.set_title(name)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    # Below the panels, never over a curve.
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(6, len(labels)), fontsize=8)
    fig.suptitle(f"{title}: mean over seeds, band = 95% CI")
    return save_figure(fig, path)


def _sweep_value(rows: list[dict[str, Any]]) -> tuple[str, str, float] | None:
    """(technique, hyperparameter, value) of a group's sweep point, read from its rows' ``sweep`` data; None
    unless the point sets exactly one numeric value."""
    point = rows[0].get("sweep") or {}
    if len(point) != 1:
        return None
    key, value = next(iter(point.items()))
    if isinstance(value, list) and len(value) == 1:  # e.g. model.hidden: [64], one layer's width
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return rows[0]["technique"], key.rsplit(".", 1)[-1], float(value)


def sweep_plot(groups: dict[str, list[dict[str, Any]]], path: Path, title: str) -> Path | None:
    """Final training loss and test accuracy against a swept hyperparameter (diverged runs drawn as x)."""
    points = {label: _sweep_value(rows) for label, rows in groups.items() if rows}
    if not points or any(p is None for p in points.values()):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axis_name = next(iter(points.values()))[1]
    for i, technique in enumerate(sorted({p[0] for p in points.values()})):
        labels = sorted((lb for lb, p in points.items() if p[0] == technique), key=lambda lb: points[lb][2])
        xs = [points[lb][2] for lb in labels]
        for ax, value in ((axes[0], _final_train_loss), (axes[1], lambda r: r.get("test_acc"))):
            means, diverged_x = [], []
            for lb in labels:
                vals = [value(r) for r in groups[lb] if r["outcome"] != "diverged" and value(r) is not None]
                means.append(mean_ci(vals).mean if vals else np.nan)
                if any(r["outcome"] == "diverged" for r in groups[lb]):
                    diverged_x.append(points[lb][2])
            (line,) = ax.plot(xs, means, marker="o", label=technique, **style(i))
            top = np.nanmax(means) if np.isfinite(np.nanmax(means)) else 1.0
            ax.plot(diverged_x, [top] * len(diverged_x), "x", color=line.get_color(), ms=9, mew=2)
    axes[0].set_yscale("log")
    for ax, name in zip(axes, ("final training loss (x = diverged)", "test accuracy"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel(axis_name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
    handles, labels = axes[1].get_legend_handles_labels()  # below the panels, covering no curve
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(6, len(labels)), fontsize=8)
    fig.suptitle(f"{title}: mean over seeds of the runs that did not diverge")
    return save_figure(fig, path)


def _final_train_loss(row: dict[str, Any]) -> float | None:
    values = [v for v in row["curves"].get("train/loss") or [] if v is not None and np.isfinite(v)]
    return values[-1] if values else None
