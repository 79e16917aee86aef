"""MLflow parent runs that group a configuration's seeds: one per (study, technique, variant, workload), its seeds
as child runs and their aggregate (mean, 95% CI bounds, n) as its own metrics, so that the MLflow UI compares
techniques directly (filter `tags.kind = 'group'`) and a click opens the seeds behind a number."""

from __future__ import annotations

import math

from techbench.analysis.stats import mean_ci
from techbench.records import RunRecord
from techbench.specs import RunConfig, StudySpec
from techbench.techniques import FAMILIES
from techbench.tracking import Tracker

GROUP = "group"
AGGREGATED = ("test/acc", "test/loss", "val/kept_acc", "time/fit_s", "epochs_run")


def group_tags(cfg: RunConfig) -> dict[str, str]:
    return {
        "kind": GROUP,
        "study": cfg.study,
        "technique": cfg.technique,
        "variant": cfg.variant,
        "workload": cfg.workload,
        "group_of": cfg.config_hash(),  # not config_hash: a search for a configuration's runs must not find it
    }


def group_parent(tracker: Tracker, cfg: RunConfig) -> str:
    """The configuration's parent run, created on first use and found again on resume."""
    return tracker.start_parent(cfg.study, f"{cfg.label}/{cfg.workload}", group_tags(cfg))


def aggregate_metrics(records: list[RunRecord]) -> dict[str, float]:
    """<metric>_mean, _ci95_low, _ci95_high over the seeds (finite values only), and seeds = n."""
    out: dict[str, float] = {"seeds": float(len(records))}
    for key in AGGREGATED:
        est = mean_ci([v for r in records if isinstance(v := r.metrics.get(key), (int, float)) and math.isfinite(v)])
        if not est.n:
            continue
        out[f"{key}_mean"] = est.mean
        if math.isfinite(est.half_width):
            out[f"{key}_ci95_low"], out[f"{key}_ci95_high"] = est.low, est.high
    return out


def summarize_groups(tracker: Tracker, spec: StudySpec, records: dict[tuple[str, int], RunRecord]) -> None:
    """Give every configuration of the study with finished runs its parent, its seeds as children (runs written
    before parents existed are adopted) and the aggregate over them."""
    for cfg in spec.runs:
        mine = [records[k] for s in range(spec.seeds) if (k := (cfg.config_hash(), s)) in records]
        if not mine:
            continue
        parent = group_parent(tracker, cfg)
        for record in mine:
            if record.parent_run_id != parent:
                tracker.adopt(record.run_id, parent)
        what = FAMILIES[cfg.family].describe(cfg.technique)["description"] if cfg.family else cfg.technique
        note = (
            f"`{cfg.label}` ({what}) on `{cfg.workload}`: {len(mine)} seeds, each a child run. Metrics here are "
            "over the seeds: <metric>_mean and the 95% Student-t interval <metric>_ci95_low/_high."
        )
        tracker.finish_parent(parent, aggregate_metrics(mine), {"mlflow.note.content": note})
