"""Run a study: every technique x seed of one params.yaml block, skipping runs already finished."""

from __future__ import annotations

import logging

from techbench.config import Params, RunConfig
from techbench.tracking import Tracker
from techbench.training.run import run_name, train_one

log = logging.getLogger("techbench")


def pending_runs(tracker: Tracker, runs: list[tuple[RunConfig, int]], force: bool):
    """(config, seed) pairs without a FINISHED MLflow run of the same config hash and seed."""
    for cfg, seed in runs:
        done = None if force else tracker.finished_run(cfg.study, cfg.config_hash(), seed)
        if done is None:
            yield cfg, seed
        else:
            log.info("skip %s: finished as run %s", run_name(cfg, seed), done.info.run_id)


def run_study(params: Params, study: str, force: bool = False, tracker: Tracker | None = None) -> int:
    """Train every missing run of ``study``; returns how many were trained."""
    spec = params.study(study)
    tracker = tracker or Tracker()
    todo = [(spec.runs[t], s) for t in spec.techniques for s in range(spec.seeds)]
    trained = 0
    for cfg, seed in pending_runs(tracker, todo, force):
        result = train_one(cfg, seed, tracker=tracker)
        log.info(
            "%s: %s test/acc=%.4f (%s)",
            run_name(cfg, seed),
            result.outcome,
            result.metrics.get("test/acc", float("nan")),
            result.run_id,
        )
        trained += 1
    return trained


def export_study(params: Params, study: str, tracker: Tracker | None = None, out_dir=None):
    """Write results/<study>/ from the MLflow runs of the current configuration."""
    from techbench import code_version
    from techbench.analysis.results import collect, write_study_results

    spec = params.study(study)
    configs = [spec.runs[t] for t in spec.techniques]
    rows = collect(tracker or Tracker(), configs, spec.seeds)
    described = {
        c.technique: {
            **c.as_dict(),
            "config_hash": c.config_hash(),
            "seeds": spec.seeds,
            "code_version": code_version(),
        }
        for c in configs
    }
    return write_study_results(study, rows, described, out_dir)
