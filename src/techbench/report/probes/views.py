"""The report's side of a probe, keyed by the probe's name: the plot of its results and its sentences for
"What the numbers say". Both take ``results``, one ``ProbeResult.as_dict()`` per seed (with its "seed").

Kept apart from the probes themselves so that writing a report never imports torch or the probe code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Results = list[dict[str, Any]]
PlotFn = Callable[[Results, Path], "Path | None"]
VerdictFn = Callable[[Results], list[str]]


@dataclass(frozen=True)
class View:
    plot: PlotFn | None = None  # draws the PNG at the path it is given; None when there is nothing to draw
    verdict: VerdictFn | None = None


VIEWS: dict[str, View] = {}


def seed_values(results: Results, row: str, key: str = "acc") -> dict[int, float]:
    """seed -> the value of ``key`` in the table row labelled ``row`` (for differences paired by seed)."""
    return {res["seed"]: r[key] for res in results for r in res["rows"] if r["row"] == row}


def view(name: str, plot: PlotFn | None = None, verdict: VerdictFn | None = None) -> View:
    """Register the view of probe ``name``."""
    if name in VIEWS:
        raise ValueError(f"probe view {name!r} is registered twice")
    VIEWS[name] = View(plot=plot, verdict=verdict)
    return VIEWS[name]
