"""How a batch of Optuna trials trains (tuning.py asks for them): as one stack of trials × seeds when the members
can share one (training/stacked.py decides from the registry entries), each trial's mean validation accuracy over
its seeds reported to it after every epoch and the trial pruned alone (its members frozen, its runs recorded as
pruned); else one trial at a time, pruned by Optuna's Lightning callback, and the reason the stack was refused
goes into the log and each run's ``stack_refused`` tag."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import optuna
from optuna_integration import PyTorchLightningPruningCallback

from techbench.specs import RunConfig
from techbench.techniques import FAMILIES
from techbench.training.procedure import train_procedure
from techbench.training.result import RunResult
from techbench.training.single import train_single
from techbench.training.stacked import refusal, train_members

log = logging.getLogger("techbench")
OBJECTIVE = "val/acc"


@dataclass
class TrialOutcome:
    trial: optuna.Trial
    results: list[RunResult]  # one per seed of the trial
    pruned: bool

    @property
    def score(self) -> float:
        """The mean over the trial's seeds of the validation accuracy of the weights each keeps; a diverged seed
        scores 0 (the worst possible, not a failed trial)."""
        return sum(_seed_score(r) for r in self.results) / len(self.results)


def _seed_score(result: RunResult) -> float:
    if result.outcome == "diverged":
        return 0.0
    if "val/kept_acc" in result.metrics:  # the weights the run keeps (restored best ones under early stopping)
        return result.metrics["val/kept_acc"]
    curve = [v for v in result.histories.get(OBJECTIVE, []) if not math.isnan(v)]
    return curve[-1] if curve else result.metrics.get("final/val_acc", 0.0)


class Pruning(PyTorchLightningPruningCallback):
    """Optuna's Lightning pruning callback, made to stop the fit instead of raising out of it (as it already
    does under DDP), so a pruned trial's partial run is still recorded."""

    pruned_epoch: int | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        try:
            super().on_validation_end(trainer, pl_module)
        except optuna.TrialPruned:
            self.pruned_epoch = pl_module.current_epoch
            trainer.should_stop = True

    @property
    def pruned(self) -> bool:
        try:
            self.check_pruned()  # under DDP the pruned state is kept in the trial's system attrs
        except optuna.TrialPruned:
            return True
        return self.pruned_epoch is not None


def stack_refusal(cfg: RunConfig, seeds: list[int]) -> str | None:
    """Why trials of ``cfg`` cannot share a stack (asked before any trial, so that such a technique is tuned one
    trial at a time and keeps Optuna's pruning), or None."""
    if FAMILIES[cfg.family].procedure:
        return f"not stackable: {cfg.family} is a procedure (its solutions are separate fits)"
    return refusal([(cfg, seed) for seed in seeds] * 2)


def train_trials(
    cfgs: list[RunConfig], trials: list[optuna.Trial], seeds: list[int], execution: str, refused: str | None = None
) -> list[TrialOutcome]:
    """Train each trial's config over ``seeds``; one outcome per trial, in order. ``refused``: why the technique
    does not stack (its runs are tagged with it)."""
    if refused is None and len(cfgs) * len(seeds) > 1 and not FAMILIES[cfgs[0].family].procedure:
        refused = refusal([(cfg, seed) for cfg in cfgs for seed in seeds])
        if refused is None:
            return _stacked(cfgs, trials, seeds)
        log.info("%s: trials one at a time (%s)", cfgs[0].technique, refused)
    outcomes = [_alone(cfg, trial, seeds, execution) for cfg, trial in zip(cfgs, trials, strict=True)]
    for outcome in outcomes if refused else []:
        for result in outcome.results:
            result.tags["stack_refused"] = refused
    return outcomes


def _alone(cfg: RunConfig, trial: optuna.Trial, seeds: list[int], execution: str) -> TrialOutcome:
    """One trial through the executors' own entry points: a procedure family's procedure (no pruning: its
    solutions are separate fits), else single runs, pruned on the validation curve when the trial has one seed."""
    if FAMILIES[cfg.family].procedure:
        return TrialOutcome(trial, [train_procedure(cfg, seed, execution) for seed in seeds], pruned=False)
    results, pruned = [], False
    for seed in seeds:
        pruning = Pruning(trial, monitor=OBJECTIVE) if len(seeds) == 1 else None
        results.append(train_single(cfg, seed, callbacks=[pruning] if pruning else None))
        pruned = pruning is not None and pruning.pruned
    for result in results if pruned else []:
        result.outcome = "pruned"
    return TrialOutcome(trial, results, pruned)


def _stacked(cfgs: list[RunConfig], trials: list[optuna.Trial], seeds: list[int]) -> list[TrialOutcome]:
    n = len(seeds)
    pruned = [False] * len(trials)

    def report(module, epoch: int, values) -> None:
        """After each epoch: each running trial gets its seeds' mean validation accuracy; a pruned one stops."""
        for j, trial in enumerate(trials):
            live = [i for i in range(j * n, (j + 1) * n) if module.stop_epoch[i] is None]
            if pruned[j] or not live:
                continue
            trial.report(sum(float(values[OBJECTIVE][i]) for i in live) / len(live), epoch)
            if trial.should_prune():
                pruned[j] = True
                for i in live:
                    module.stop(i, "pruned")

    results = train_members([(cfg, seed) for cfg in cfgs for seed in seeds], epoch_hooks=[report])
    outcomes = []
    for j, trial in enumerate(trials):
        own = results[j * n : (j + 1) * n]
        for result in own if pruned[j] else []:
            result.outcome = "pruned"
        outcomes.append(TrialOutcome(trial, own, pruned[j]))
    return outcomes
