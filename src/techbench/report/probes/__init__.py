"""Report sections for probes: each probe's rows as mean ± 95% CI over seeds, its notes, verdict and plot.

A probe's plot and verdict are its view (views.py), registered by the topic modules of this package; the probe
results passed in carry everything else (description, hp, runs), so the report needs no probe code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from techbench.analysis.stats import mean_ci
from techbench.report.claims import say
from techbench.report.document import Section, Table
from techbench.report.probes.views import VIEWS, View, view


def _cell(values: list[Any]) -> str:
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v]
    if nums and len(nums) == len([v for v in values if v is not None]):
        est = mean_ci(nums)
        scale = max(abs(est.mean), 1e-300)
        digits = 3 if 1e-2 <= scale < 1e4 else None
        if digits is None:
            return f"{est.mean:.3g}" + (f" ± {est.half_width:.2g}" if est.n > 1 else "")
        return est.fmt(1.0, digits)
    texts = sorted({str(v) for v in values if v is not None})
    return "/".join(texts) if texts else "–"


def probe_table(runs: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    labels = list(dict.fromkeys(r["row"] for run in runs for r in run["rows"]))
    columns = list(dict.fromkeys(k for run in runs for r in run["rows"] for k in r if k != "row"))
    rows = []
    for label in labels:
        cells = [[r.get(c) for run in runs for r in run["rows"] if r["row"] == label] for c in columns]
        rows.append([label, str(len(runs))] + [_cell(v) for v in cells])
    return ["row", "seeds"] + columns, rows


def probe_sections(probes: dict[str, Any], figures_dir: Path, study: str) -> list[Section]:
    sections = []
    for name, info in probes.items():
        runs = info["runs"]
        entry = VIEWS.get(name)
        sec = Section(f"Probe `{name}`", paragraphs=[info.get("description", "")])
        hp = ", ".join(f"{k}={v}" for k, v in info.get("hp", {}).items())
        sec.paragraphs.append(
            f"Settings: {hp or 'defaults'}; {len(runs)} seed(s); MLflow runs "
            + " ".join(f"`{r['run_id'][:8]}`" for r in runs)
            + ". Numeric cells: mean ± 95% CI over seeds."
        )
        if runs:
            sec.paragraphs += runs[0].get("notes", [])
            headers, rows = probe_table(runs)
            sec.tables.append(Table(headers, rows))
        if entry is not None and runs:
            if entry.verdict:
                say(sec, entry.verdict(runs), "**What it says:** ")
            if entry.plot:
                path = entry.plot(runs, figures_dir / f"{study}_{name}.png")
                if path is not None:
                    sec.figures.append(Path(path))
        sections.append(sec)
    return sections


# Importing the topic modules registers their views; they import views.py, not this module, so order is free.
from techbench.report.probes import bias_variance, few_shot, gradients, lr_range_test  # noqa: E402, F401, I001
from techbench.report.probes import mode_connectivity, multi_task, quadratic  # noqa: E402, F401, I001

__all__ = ["VIEWS", "View", "probe_sections", "probe_table", "view"]
