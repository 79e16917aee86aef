"""Optuna tuning of one technique's hyperparameters over its declared search space.

Storage defaults to sqlite:///optuna.db (OPTUNA_STORAGE or --storage override it; a PostgreSQL URL lets
several `techbench tune` workers on several machines share one study). Each trial is an MLflow child
run of one parent run per tuning study; trials are pruned by Optuna's Lightning callback.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import optuna

from techbench.analysis.results import RESULTS_DIR, collect
from techbench.config import Params, RunConfig, slot_of
from techbench.registry import Registry
from techbench.study import pending_runs
from techbench.techniques import FAMILIES
from techbench.tracking import Tracker, absolute_sqlite
from techbench.training.run import run_name, run_tags, train_one

log = logging.getLogger("techbench")
DEFAULT_STORAGE = "sqlite:///optuna.db"
OBJECTIVE = "val/acc"


def storage_url(storage: str | None = None) -> str:
    return absolute_sqlite(storage or os.environ.get("OPTUNA_STORAGE") or DEFAULT_STORAGE)


def suggest(trial: optuna.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Plain-data search space -> trial.suggest_* calls."""
    hp: dict[str, Any] = {}
    for name, dim in space.items():
        if "choices" in dim:
            hp[name] = trial.suggest_categorical(name, dim["choices"])
        elif isinstance(dim["low"], int) and isinstance(dim["high"], int) and not dim.get("float"):
            hp[name] = trial.suggest_int(name, dim["low"], dim["high"], log=dim.get("log", False))
        else:
            hp[name] = trial.suggest_float(name, dim["low"], dim["high"], log=dim.get("log", False))
    return hp


def study_name(cfg: RunConfig) -> str:
    return f"{cfg.study}/{cfg.technique}/{cfg.config_hash()}"


def tune(
    cfg: RunConfig,
    registry: Registry,
    trials: int,
    seed: int = 0,
    sampler_seed: int = 0,
    storage: str | None = None,
    tracker: Tracker | None = None,
) -> optuna.Study:
    """Run until the Optuna study holds ``trials`` finished (complete or pruned) trials."""
    from optuna_integration import PyTorchLightningPruningCallback

    tracker = tracker or Tracker()
    space = registry.get(cfg.technique).search_space
    if not space:
        raise ValueError(f"{cfg.technique} declares no search space")
    name = study_name(cfg)
    study = optuna.create_study(
        study_name=name,
        storage=storage_url(storage),
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=sampler_seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
        load_if_exists=True,
    )
    parent = tracker.start_parent(
        cfg.study,
        f"tune/{cfg.technique}",
        {"study": cfg.study, "technique": cfg.technique, "kind": "tuning", "optuna_study": name},
    )

    def objective(trial: optuna.Trial) -> float:
        hp = suggest(trial, space)
        trial_cfg = cfg.with_technique_params(hp, variant=f"trial{trial.number}")
        tags = {**run_tags(trial_cfg, seed), "kind": "trial", "optuna_trial": str(trial.number)}
        logger = tracker.logger(cfg.study, f"{run_name(cfg, seed)}/trial{trial.number}", tags, parent)
        pruning = PyTorchLightningPruningCallback(trial, monitor=OBJECTIVE)
        try:
            result = train_one(trial_cfg, seed, logger=logger, callbacks=[pruning])
        except optuna.TrialPruned:
            tracker.client.set_tag(logger.run_id, "outcome", "pruned")
            tracker.client.set_terminated(logger.run_id, "KILLED")
            raise
        trial.set_user_attr("mlflow_run_id", result.run_id)
        if result.outcome == "diverged":
            return 0.0  # a diverged configuration is the worst possible score, not a failed trial
        return tracker.history(result.run_id, OBJECTIVE)[-1]

    done = sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials)
    if done < trials:
        study.optimize(objective, n_trials=trials - done)
    tracker.client.log_metric(parent, "best/val_acc", study.best_value)
    for k, v in study.best_params.items():
        tracker.client.set_tag(parent, f"best.{k}", str(v))
    tracker.client.set_terminated(parent, "FINISHED")
    return study


def tune_study(
    params: Params,
    study: str,
    techniques: list[str] | None = None,
    trials: int | None = None,
    storage: str | None = None,
    force: bool = False,
    tracker: Tracker | None = None,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Tune each technique on the study's first workload, re-run its best configuration over the study's
    seeds (a tuned score on the validation set it was chosen on is biased upward), and write
    results/<study>/tuning.json."""
    spec = params.study(study)
    budget = params.tuning.get(study)
    techniques = techniques or (budget.techniques if budget else [])
    tracker = tracker or Tracker()
    registry = FAMILIES[spec.family].registry
    n_trials = trials or (budget.trials if budget else 20)
    seed, sampler_seed = (budget.seed, budget.sampler_seed) if budget else (0, 0)
    eval_seeds = (budget.eval_seeds if budget else 0) or spec.seeds
    summary: dict[str, Any] = {}
    for technique in techniques:
        base = spec.run(technique)
        result = tune(base, registry, n_trials, seed, sampler_seed, storage, tracker)
        tuned = base.with_technique_params(result.best_params, variant="tuned")
        for cfg, s in pending_runs(tracker, [(tuned, s) for s in range(eval_seeds)], force):
            train_one(cfg, s, tracker=tracker)
        states = [t.state.name for t in result.trials]
        summary[technique] = {
            "optuna_study": result.study_name,
            "best_params": result.best_params,
            "best_val_acc": result.best_value,
            "trials": len(states),
            "pruned": states.count("PRUNED"),
            "default_params": {k: v for k, v in base.components[slot_of(base.family)].items() if k != "name"},
            "runs": collect(tracker, [tuned], eval_seeds),
        }
        log.info("tuned %s/%s: best val/acc %.4f with %s", study, technique, result.best_value, result.best_params)
    out = (out_dir or RESULTS_DIR) / study
    out.mkdir(parents=True, exist_ok=True)
    (out / "tuning.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary
