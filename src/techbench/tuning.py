"""Optuna tuning of one technique's hyperparameters over its declared search space.

Storage defaults to sqlite:///optuna.db (OPTUNA_STORAGE or --storage override it; a PostgreSQL URL lets
several `techbench tune` workers on several machines share one study). Each trial ends as one RunRecord
(kind trial), an MLflow child run of one parent run per tuning study; trials are pruned by Optuna's Lightning
callback, and a pruned trial's partial run is recorded too (outcome pruned).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import optuna
from optuna_integration import PyTorchLightningPruningCallback

from techbench.analysis.rows import row_from_record
from techbench.results import write_tuning
from techbench.specs import Params, RunConfig
from techbench.study import pending_runs
from techbench.techniques import FAMILIES
from techbench.tracking import Tracker, absolute_sqlite
from techbench.training.executors import execute
from techbench.training.procedure import train_procedure
from techbench.training.single import train_single

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


class Pruning(PyTorchLightningPruningCallback):
    """Optuna's Lightning pruning callback, made to stop the fit instead of raising out of it (as it already
    does under DDP), so a pruned trial's partial run is still recorded; ``raise_if_pruned`` after fit."""

    pruned_epoch: int | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        try:
            super().on_validation_end(trainer, pl_module)
        except optuna.TrialPruned:
            self.pruned_epoch = pl_module.current_epoch
            trainer.should_stop = True

    @property
    def pruned(self) -> bool:
        return self.pruned_epoch is not None

    def raise_if_pruned(self) -> None:
        if self.pruned:
            raise optuna.TrialPruned(f"Trial was pruned at epoch {self.pruned_epoch}.")
        self.check_pruned()  # the DDP path's record of a pruned trial


def _train_trial(cfg: RunConfig, trial: optuna.Trial, seed: int, execution: str):
    """One trial through the executors' own entry points: a procedure family's procedure (no pruning: its
    solutions are separate fits), else one single run pruned on the validation curve."""
    if FAMILIES[cfg.family].procedure:
        return train_procedure(cfg, seed, execution), None
    pruning = Pruning(trial, monitor=OBJECTIVE)
    result = train_single(cfg, seed, callbacks=[pruning])
    if pruning.pruned:
        result.outcome = "pruned"
    return result, pruning


def study_name(cfg: RunConfig) -> str:
    return f"{cfg.study}/{cfg.technique}/{cfg.config_hash()}"


def tune(
    cfg: RunConfig,
    trials: int,
    seed: int = 0,
    sampler_seed: int = 0,
    storage: str | None = None,
    tracker: Tracker | None = None,
    execution: str = "sequential",
) -> optuna.Study:
    """Run until the Optuna study holds ``trials`` finished (complete or pruned) trials."""
    tracker = tracker or Tracker()
    space = FAMILIES[cfg.family].registry.get(cfg.technique).search_space
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
        trial_cfg = cfg.with_technique_params(suggest(trial, space), variant=f"trial{trial.number}")
        result, pruning = _train_trial(trial_cfg, trial, seed, execution)
        record = result.record("trial", parent, optuna_trial=str(trial.number), optuna_study=name)
        record.name += f"/trial{trial.number}"
        trial.set_user_attr("mlflow_run_id", tracker.write(record))
        if pruning is not None:
            pruning.raise_if_pruned()
        if result.outcome == "diverged":
            return 0.0  # a diverged configuration is the worst possible score, not a failed trial
        # A procedure's run has no per-epoch curve: its kept solution's validation accuracy is the score.
        curve = record.histories.get(OBJECTIVE)
        return curve[-1] if curve else record.metrics["final/val_acc"]

    done = sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials)
    if done < trials:
        study.optimize(objective, n_trials=trials - done)
    best = {f"best.{k}": str(v) for k, v in study.best_params.items()}
    tracker.finish_parent(parent, {"best/val_acc": study.best_value}, best)
    return study


def tune_study(
    params: Params,
    study: str,
    techniques: list[str] | None = None,
    trials: int | None = None,
    storage: str | None = None,
    force: bool = False,
    tracker: Tracker | None = None,
    root: Path | None = None,
) -> dict[str, Any]:
    """Tune each technique on the study's first workload, re-run its best configuration over the study's
    seeds (a tuned score on the validation set it was chosen on is biased upward), and write
    results/<study>/tuning.json."""
    spec = params.study(study)
    budget = params.tuning.get(study)
    techniques = techniques or (budget.techniques if budget else [])
    tracker = tracker or Tracker()
    n_trials = trials or (budget.trials if budget else 20)
    seed, sampler_seed = (budget.seed, budget.sampler_seed) if budget else (0, 0)
    eval_seeds = (budget.eval_seeds if budget else 0) or spec.seeds
    summary: dict[str, Any] = {}
    for technique in techniques:
        base = spec.run(technique)
        result = tune(base, n_trials, seed, sampler_seed, storage, tracker, spec.execution)
        tuned = base.with_technique_params(result.best_params, variant="tuned")
        todo = [s for _, s in pending_runs(tracker, [(tuned, s) for s in range(eval_seeds)], force)]
        for run in execute(tuned, todo, spec.execution) if todo else []:
            tracker.write(run.record())
        records = tracker.records(study, "run", {(tuned.config_hash(), s) for s in range(eval_seeds)})
        target = spec.workloads[tuned.workload].target_value
        states = [t.state.name for t in result.trials]
        summary[technique] = {
            "optuna_study": result.study_name,
            "best_params": result.best_params,
            "best_val_acc": result.best_value,
            "trials": len(states),
            "pruned": states.count("PRUNED"),
            "default_params": {k: v for k, v in base.components[base.family].items() if k != "name"},
            "runs": [row_from_record(r, target) for _, r in sorted(records.items())],
        }
        log.info("tuned %s/%s: best val/acc %.4f with %s", study, technique, result.best_value, result.best_params)
    write_tuning(root or Path(params.paths["results"]), study, summary)
    return summary
