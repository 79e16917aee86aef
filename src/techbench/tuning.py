"""Optuna tuning of one technique's hyperparameters over its declared search space.

Storage defaults to sqlite:///optuna.db (OPTUNA_STORAGE or --storage override it; a PostgreSQL URL lets
several `techbench tune` workers on several machines share one study). Optuna is asked for ``tuning.<study>.stack``
trials at a time (ask-and-tell); trials.py trains them as one stack of trials × seeds where the members can share
one, else one at a time. Each (trial, seed) ends as one RunRecord (kind trial), an MLflow child run of one parent
run per tuning study; a pruned trial's partial runs are recorded too (outcome pruned).
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import optuna

from techbench.analysis.rows import row_from_record
from techbench.results import write_tuning
from techbench.specs import Params, RunConfig, TuningSpec
from techbench.study import pending_runs
from techbench.techniques import FAMILIES
from techbench.tracking import Tracker
from techbench.training.executors import execute
from techbench.trial_store import (
    HEARTBEAT_S,
    claim,
    heartbeats,
    make_sampler,
    open_storage,
    quiet,
    room,
    suggest,
    trial_seed,
    within_budget,
)
from techbench.trials import stack_refusal, train_trials

log = logging.getLogger("techbench")


OBJECTIVE = "val_kept_acc"  # validation accuracy of the weights each run keeps, mean over the trial's seeds


def study_name(cfg: RunConfig) -> str:
    """<study>/<technique>/<workload>/<config hash>: readable in optuna-dashboard, unique per configuration."""
    return f"{cfg.study}/{cfg.technique}/{cfg.workload}/{cfg.config_hash()}"


def _describe(study: optuna.Study, cfg: RunConfig, seeds: list[int], sampler: str) -> None:
    """What optuna-dashboard shows next to the trials: the objective's name and the study's identity."""
    with warnings.catch_warnings():  # experimental since Optuna 3.2 and still the way to name the objective
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([OBJECTIVE])
    attrs = {
        "study": cfg.study,
        "technique": cfg.technique,
        "workload": cfg.workload,
        "config_hash": cfg.config_hash(),
        "trial_seeds": seeds,
        "sampler": sampler,
        "objective": "validation accuracy of the kept weights (val/kept_acc), mean over the trial seeds",
    }
    for key, value in attrs.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)


def tune(
    cfg: RunConfig,
    trials: int,
    seed: int = 0,
    sampler_seed: int = 0,
    storage: str | None = None,
    tracker: Tracker | None = None,
    execution: str = "sequential",
    budget: TuningSpec | None = None,
    trials_only: bool = False,
) -> optuna.Study:
    """Run until the Optuna study holds ``trials`` finished (complete or pruned) trials, asking for
    ``budget.stack`` trials at a time and training each over ``budget.trial_seeds`` seeds (seed, seed+1, ...)."""
    tracker = tracker or Tracker()
    tracker.close_abandoned(cfg.study)
    stack, trial_seeds, sampler = (budget.stack, budget.trial_seeds, budget.sampler) if budget else (1, 1, "tpe")
    space = FAMILIES[cfg.family].registry.get(cfg.technique).search_space
    if not space:
        raise ValueError(f"{cfg.technique} declares no search space")
    name = study_name(cfg)
    heartbeat = budget.heartbeat if budget else HEARTBEAT_S
    study = optuna.create_study(
        study_name=name,
        storage=open_storage(storage, heartbeat),
        direction="maximize",
        sampler=make_sampler(sampler, sampler_seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
        load_if_exists=True,
    )
    parent = tuning_parent(tracker, cfg)
    seeds = [seed + i for i in range(trial_seeds)]
    _describe(study, cfg, seeds, sampler)
    refused = stack_refusal(cfg, seeds) if stack > 1 else None
    if refused:
        log.info("%s: trials one at a time (%s)", cfg.technique, refused)
        stack = 1
    while True:
        asked, cfgs = _next_trials(study, cfg, space, trials, stack, sampler, sampler_seed, heartbeat)
        if not asked:
            break
        with heartbeats(study, asked):
            try:
                outcomes = train_trials(cfgs, asked, seeds, execution, refused)
            except BaseException:
                for trial in asked:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            for outcome in outcomes:
                _tell(study, outcome, tracker, parent, name, len(asked))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not trials_only and complete:  # a worker of several leaves the parent to the evaluation
        best = {f"best.{k}": str(v) for k, v in study.best_params.items()}
        tracker.finish_parent(parent, {"best/val_acc": study.best_value}, best)
    return study


def _next_trials(study, cfg, space, trials, stack, sampler, sampler_seed, heartbeat) -> tuple[list, list]:
    """The next trials this worker trains (at most ``stack``, within the shared budget) and their configs;
    empty once the budget is met. While other workers' trials fill the budget it waits: one of them may die
    and leave its trial to be retried."""
    while True:
        free, running = room(study, trials)
        if not free:
            if running and _finished(study) < trials:
                time.sleep(heartbeat)
                continue
            return [], []
        proposed = [_ask(study, space, sampler, sampler_seed) for _ in range(min(stack, free))]
        kept = {t.number for t in within_budget(study, [t for t, _ in proposed], trials)}
        if kept:
            asked = [t for t, _ in proposed if t.number in kept]
            return asked, [
                cfg.with_technique_params(hp, variant=f"trial{t.number}") for t, hp in proposed if t.number in kept
            ]


def _ask(study: optuna.Study, space: dict, sampler: str, sampler_seed: int) -> tuple[optuna.Trial, dict[str, Any]]:
    """One trial and its hyperparameters, proposed by a sampler seeded from the trial's number (QMC keeps its
    one seed: its sequence index is kept in the storage, so resumed and parallel workers continue it)."""
    with quiet():
        trial = study.ask()
    claim(study, trial)
    if sampler != "qmc":
        study.sampler = make_sampler(sampler, trial_seed(sampler_seed, trial.number))
    return trial, suggest(trial, space)


def tuning_parent(tracker: Tracker, cfg: RunConfig) -> str:
    """The MLflow parent of a technique's tuning: its trials' runs and the tuned re-runs are its children."""
    tags = {"study": cfg.study, "technique": cfg.technique, "kind": "tuning", "optuna_study": study_name(cfg)}
    return tracker.start_parent(cfg.study, f"tune/{cfg.technique}", tags)


def _finished(study: optuna.Study) -> int:
    return sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials)


def _tell(study, outcome, tracker: Tracker, parent: str, name: str, stacked: int) -> None:
    """Each of the trial's runs is its own MLflow child run; then Optuna hears its score or that it was pruned."""
    trial, ids = outcome.trial, []
    for result in outcome.results:
        record = result.record("trial", parent, optuna_trial=str(trial.number), optuna_study=name)
        record.tags["trials_stacked"] = str(stacked if result.tags.get("execution") == "vectorized" else 1)
        record.name += f"/trial{trial.number}"
        ids.append(tracker.write(record))
    trial.set_user_attr("mlflow_run_id", ids[0])
    trial.set_user_attr("mlflow_run_ids", ids)
    if outcome.pruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, outcome.score)


def best_within(study: optuna.Study, n: int) -> optuna.trial.FrozenTrial | None:
    """The best complete trial among the study's first ``n`` finished ones (by trial number): the result of a
    search given a budget of ``n`` trials, since no trial depends on later ones."""
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    first = sorted((t for t in study.trials if t.state in done), key=lambda t: t.number)[:n]
    complete = [t for t in first if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def tune_study(
    params: Params,
    study: str,
    techniques: list[str] | None = None,
    trials: int | None = None,
    storage: str | None = None,
    force: bool = False,
    tracker: Tracker | None = None,
    root: Path | None = None,
    trials_only: bool = False,
) -> dict[str, Any]:
    """Tune each technique on the study's first workload up to its largest budget, re-run the best configuration
    of every budget over the evaluation seeds (a tuned score on the validation set it was chosen on is biased
    upward; the trials train with a seed outside that set), and write results/<study>/tuning.json."""
    spec = params.study(study)
    budget = params.tuning.get(study)
    techniques = techniques or (budget.techniques if budget else [])
    tracker = tracker or Tracker()
    budgets = dict(budget.budgets) if budget and budget.budgets else {"tuned": budget.trials if budget else 20}
    if trials:  # the command line's --trials: one budget of that many trials
        budgets = {"tuned": trials}
    seed, sampler_seed = (budget.seed, budget.sampler_seed) if budget else (0, 0)
    eval_seeds = (budget.eval_seeds if budget else 0) or spec.seeds
    summary: dict[str, Any] = {}
    trials: dict[str, list[dict[str, Any]]] = {}
    for technique in techniques:
        base = spec.run(technique)
        result = tune(
            base, max(budgets.values()), seed, sampler_seed, storage, tracker, spec.execution, budget, trials_only
        )
        if trials_only:  # a worker: the evaluation runs once, after every worker is done
            continue
        trials[technique] = [_trial_row(t) for t in result.trials]
        states = [t.state.name for t in result.trials]
        summary[technique] = {
            "optuna_study": result.study_name,
            "trials": states.count("COMPLETE") + states.count("PRUNED"),
            "pruned": states.count("PRUNED"),
            # killed workers' trials (each re-queued with its hyperparameters) and surplus asks of concurrent ones
            "failed": states.count("FAIL"),
            "default_params": {k: v for k, v in base.components[base.family].items() if k != "name"},
            "budgets": _rerun_budgets(spec, base, result, budgets, eval_seeds, tracker, force),
        }
        largest = summary[technique]["budgets"][max(budgets, key=budgets.get)]
        summary[technique].update(  # the largest budget's result, under the names one budget always had
            best_params=largest["best_params"], best_val_acc=largest["best_val_acc"], runs=largest["runs"]
        )
        log.info("tuned %s/%s: best val/acc %.4f with %s", study, technique, result.best_value, result.best_params)
    if not trials_only:
        write_tuning(root or Path(params.paths["results"]), study, summary, trials)
    return summary


def _trial_row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {
        "number": trial.number,
        "state": trial.state.name,
        OBJECTIVE: trial.value,
        "params": trial.params,
        "mlflow_run_ids": trial.user_attrs.get("mlflow_run_ids", []),
    }


def _rerun_budgets(spec, base: RunConfig, study: optuna.Study, budgets, eval_seeds, tracker, force) -> dict:
    """Per budget: its best trial, re-run over the evaluation seeds; a budget whose best trial an earlier one
    already chose shares its runs (the same configuration is not trained twice)."""
    out: dict[str, Any] = {}
    chosen: dict[int, str] = {}
    for name, n in budgets.items():
        trial = best_within(study, n)
        if trial is None:
            out[name] = {"trials": n, "best_trial": None, "best_params": {}, "best_val_acc": None, "runs": []}
            continue
        variant = chosen.setdefault(trial.number, "tuned" if len(budgets) == 1 else f"tuned_{name}")
        tuned = base.with_technique_params(trial.params, variant=variant)
        todo = [s for _, s in pending_runs(tracker, [(tuned, s) for s in range(eval_seeds)], force)]
        parent = tuning_parent(tracker, base)
        for run in execute(tuned, todo, spec.execution) if todo else []:
            tracker.write(run.record("run", parent))
        records = tracker.records(spec.name, "run", {(tuned.config_hash(), s) for s in range(eval_seeds)})
        target = spec.workloads[tuned.workload].target_value
        out[name] = {
            "trials": n,
            "best_trial": trial.number,
            "best_params": trial.params,
            "best_val_acc": trial.value,
            "variant": variant,
            "runs": [row_from_record(r, target) for _, r in sorted(records.items())],
        }
    return out
