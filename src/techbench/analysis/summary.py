"""Summaries of a study's rows for its DVC files: per workload and technique the mean, CI and n of the headline
numbers (metrics.json), per-epoch mean curves (curves/*.csv), and the probes' per-row means."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from techbench.analysis.rows import label, value
from techbench.analysis.stats import mean_ci
from techbench.analysis.target import UNITS, to_target

HEADLINE = (
    "test_acc",
    "test_loss",
    "final_val_loss",
    "best_epoch",
    "fit_s",
    "val_acc",
    "gen_gap",
    "throughput",
    "peak_memory_mb",
    "calibration/ece",
)


def _round(x: float) -> float | None:
    return round(float(x), 6) if math.isfinite(x) else None


def groups(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(workload, label) -> rows, sorted."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["workload"], label(r)), []).append(r)
    return dict(sorted(out.items()))


def aggregate(rows: list[dict[str, Any]], extra: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """Per workload, per technique (and variant): mean, CI half-width and n of the headline numbers and of the
    family's ``extra`` metrics (keys with "/" become "_": DVC reads "." and "/" alike as nesting)."""
    out: dict[str, dict[str, Any]] = {}
    for (workload, lab), group in groups(rows).items():
        entry: dict[str, Any] = {"n": len(group), "diverged": sum(r["outcome"] == "diverged" for r in group)}
        for unit in UNITS:  # over every seed: the reached fraction and the censored (Kaplan-Meier) median
            reached, timed, median = to_target(group, unit)
            if timed:
                entry["target_reached_frac"] = _round(reached / timed)
                entry[f"{unit}_to_target_median"] = None if median is None else _round(median)
        for metric in dict.fromkeys((*HEADLINE, *extra)):
            est = mean_ci([v for r in group if (v := value(r, metric)) is not None])
            if est.n:
                key = metric.replace("/", "_")
                entry[f"{key}_mean"] = _round(est.mean)
                entry[f"{key}_ci95"] = _round(est.half_width)
        out.setdefault(workload, {})[lab] = entry
    return out


def mean_curve(rows: list[dict[str, Any]], key: str) -> list[float]:
    """Per-epoch mean over the runs' curves (NaN-aware; runs that stopped early just end)."""
    curves = [r["curves"][key] for r in rows if r["curves"].get(key)]
    if not curves:
        return []
    length = max(len(c) for c in curves)
    padded = np.full((len(curves), length), np.nan)
    for i, c in enumerate(curves):
        padded[i, : len(c)] = [np.nan if v is None else v for v in c]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an epoch no run reached: NaN, as meant
        return [float(v) for v in np.nanmean(padded, axis=0)]


def mean_curves(rows: list[dict[str, Any]], columns: dict[str, str]) -> dict[str, dict[str, list[float]]]:
    """ "<workload>__<label>" -> {column: per-epoch mean of its curve}."""
    return {
        f"{workload}__{lab}": {col: mean_curve(group, key) for col, key in columns.items()}
        for (workload, lab), group in groups(rows).items()
    }


def probe_means(probes: dict[str, Any]) -> dict[str, Any]:
    """probe -> row -> measure -> mean over seeds, of the numeric cells."""
    summary: dict[str, Any] = {}
    for name, info in probes.items():
        for run in info["runs"]:
            for row in run["rows"]:
                for k, v in row.items():
                    if k != "row" and isinstance(v, (int, float)) and not isinstance(v, bool):
                        summary.setdefault(name, {}).setdefault(str(row["row"]), {}).setdefault(k, []).append(v)
    return {
        p: {r: {k: _round(mean_ci(v).mean) for k, v in cols.items()} for r, cols in rows.items()}
        for p, rows in summary.items()
    }
