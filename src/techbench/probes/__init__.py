"""Probes: measurements that are not one training run per technique.

A probe is a registered function ``fn(ctx: ProbeContext, **hp) -> ProbeResult``: a timing comparison, a
gradient check, gradient descent on a quadratic with known eigenvalues, a learning-rate range test. A study
lists probes under ``probes:`` in params.yaml; each (probe, seed) becomes one MLflow run (tag kind=probe)
whose rows are logged as metrics ``<row>/<metric>`` and whose curves as metric histories, and the report
shows each probe's rows as a table (mean ± 95% CI over seeds) plus the probe's own plot.

Flags (ProbeInfo): ``topic`` — the study topic it belongs to in `techbench list` (e.g. "gradient_computation").
A probe's plot and its sentences for "What the numbers say" are its view in techbench.report.probes, registered
under the probe's name there, so that the report never imports the probes (nor torch).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any

from techbench.registry import Info, Registry


@dataclass(frozen=True)
class ProbeInfo(Info):
    topic: str | None = None


PROBES = Registry("probe", ProbeInfo)


@dataclass(frozen=True)
class ProbeContext:
    """What a probe may use: the study's workload (component dicts as in a run config) and a seed."""

    data: dict[str, Any]  # e.g. {"name": "mnist1d", ...}: techbench.workloads.load_dataset(ctx.data)
    model: dict[str, Any]  # e.g. {"name": "mlp", "hidden": [100, 100], ...}: workloads.build_model(...)
    train: dict[str, Any]  # epochs, batch_size, ...
    hardware: dict[str, Any]  # accelerator, precision, ...
    components: dict[str, dict[str, Any]]  # the study's fixed optimizer/schedule/batching components
    seed: int


@dataclass
class ProbeResult:
    # One dict per table row: {"row": "<label>", "<metric>": float | str, ...}. Rows with the same label
    # across seeds are averaged with a 95% CI; string values are shown as they are.
    rows: list[dict[str, Any]]
    # label -> {series: values}; a series named "x" (if present) is the x-axis of that label's other series.
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # Sentences for the report: what was measured, on what hardware.
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "curves": self.curves, "notes": self.notes}


def run_probe(name: str, ctx: ProbeContext, hp: dict[str, Any]) -> ProbeResult:
    return PROBES.get(name).factory(ctx, **hp)


def _register_all() -> None:
    # Importing the modules registers their probes.
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


_register_all()

__all__ = ["PROBES", "ProbeContext", "ProbeResult", "run_probe"]
