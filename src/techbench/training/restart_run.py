"""Restart procedures as runs: one MLflow run per (technique, seed) of the `restarts` family.

A restart technique (techniques/restarts.py) is a procedure that trains several solutions — independent
initializations, perturbations of the best one, snapshots of one cyclical run — and returns the one it keeps
plus a record of every solution it trained. Each solution is trained by a Lightning fit of the same
TechniqueModule every run uses (RestartContext.fit); the procedure's MLflow run logs the kept solution's
test/val metrics, per-solution histories (`restart/val_loss`, `restart/val_acc`, `restart/test_acc`, step =
solution index), the procedure's own measures, and the compute spent (`compute/epochs`).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from torch import nn

from techbench.config import RunConfig
from techbench.techniques.batching import apply_batching
from techbench.tracking import Tracker, flatten
from techbench.training.evaluation import evaluate, predict_probs
from techbench.training.module import TechniqueModule
from techbench.training.run import RunResult, _Loaders, build_run_model, run_name, run_tags
from techbench.training.trainer import make_trainer
from techbench.workloads import load_dataset

log = logging.getLogger("techbench")


@dataclass
class RestartOutcome:
    final: nn.Module  # the solution the procedure keeps
    members: list[dict[str, float]]  # one record per trained solution: val_loss, val_acc, test_acc, ...
    metrics: dict[str, float] = field(default_factory=dict)  # the procedure's own measures (accept rate, ...)
    curves: dict[str, list[float]] = field(default_factory=dict)  # e.g. best-of-n vs n, loss along a path


class RestartContext:
    """What a restart procedure may use: the run's data and config, fresh models, Lightning fits, scores."""

    def __init__(self, cfg: RunConfig, seed: int, execution: str = "sequential"):
        self.cfg, self.seed, self.execution = cfg, seed, execution
        self.data = load_dataset(cfg.data, seed)
        self.config = apply_batching(cfg.as_dict(), len(self.data.x_train))
        self.epochs = int(self.config["train"]["epochs"])
        self.spent_epochs = 0  # compute accounting: epochs trained over all solutions
        self.vectorized = False  # set once independent restarts were trained as one stack

    def member_seed(self, index: int) -> int:
        """The seed of the run's index-th solution: distinct across indices and across the run's seeds."""
        return self.seed * 100_003 + index

    def new_model(self, index: int) -> nn.Module:
        """A freshly initialized model, as a sequential run with seed member_seed(index) would draw it."""
        L.seed_everything(self.member_seed(index), workers=True, verbose=False)
        return build_run_model(self.config, self.data)

    def fit(
        self,
        model: nn.Module,
        epochs: int | None = None,
        index: int = 0,
        schedule: dict[str, Any] | None = None,
        callbacks: list | None = None,
    ) -> TechniqueModule:
        """Train ``model`` in place with a Lightning Trainer (batch order from member_seed(index)); returns
        the module (its val_losses, epoch_times and diverged flag describe the fit)."""
        config = copy.deepcopy(self.config)
        config["train"]["epochs"] = int(epochs or self.epochs)
        if schedule is not None:
            config["schedule"] = schedule
        L.seed_everything(self.member_seed(index), workers=True, verbose=False)
        module = TechniqueModule(model, config, self.data.num_classes, len(self.data.x_train))
        trainer = make_trainer(self.cfg.hardware, config["train"], logger=False, callbacks=callbacks)
        trainer.fit(module, datamodule=_Loaders(self.data, config["train"]["batch_size"], self.member_seed(index)))
        self.spent_epochs += len(module.epoch_times)
        return module

    def fit_fresh(self, indices: list[int], epochs: int | None = None) -> list[nn.Module]:
        """Independent restarts: new models for ``indices``, each trained from scratch — as one vectorized
        stack when the study runs `execution: vectorized` and the config can be stacked (same numbers)."""
        from dataclasses import replace

        from techbench.training.vectorized import train_seeds, vectorizable

        cfg = replace(self.cfg, train={**self.cfg.train, "epochs": int(epochs or self.epochs)})
        if self.execution == "vectorized" and len(indices) > 1:
            why = vectorizable(cfg, len(self.data.x_train))
            if why is None:
                # Every restart trains on the run's own data (a resampled training set belongs to the run's seed).
                results = train_seeds(cfg, [self.member_seed(i) for i in indices], data=self.data)
                self.spent_epochs += sum(int(r.metrics["epochs_run"]) for r in results)
                self.vectorized = True
                return [r.model for r in results]
            log.info("%s: sequential restarts (%s)", self.cfg.label, why)
        models = []
        for i in indices:
            model = self.new_model(i)
            self.fit(model, epochs, index=i)
            models.append(model)
        return models

    def score(self, model: nn.Module) -> dict[str, float]:
        val = evaluate(model, self.data.x_val, self.data.y_val)
        test = evaluate(model, self.data.x_test, self.data.y_test)
        return {"val_loss": val["loss"], "val_acc": val["acc"], "test_loss": test["loss"], "test_acc": test["acc"]}

    def probs(self, model: nn.Module, split: str = "test") -> torch.Tensor:
        return predict_probs(model, getattr(self.data, f"x_{split}"))


def train_restart(
    cfg: RunConfig, seed: int, tracker: Tracker | None = None, execution: str = "sequential"
) -> RunResult:
    """Run the config's restart procedure for one seed and log it as one MLflow run."""
    from techbench.techniques.restarts import run_procedure
    from techbench.training.evaluation import post_fit_metrics

    ctx = RestartContext(cfg, seed, execution)
    start = time.perf_counter()
    outcome = run_procedure(ctx, cfg.components["restart"])
    seconds = time.perf_counter() - start
    final = ctx.score(outcome.final)
    metrics = {
        "test/acc": final["test_acc"],
        "test/loss": final["test_loss"],
        "final/val_loss": final["val_loss"],
        "final/val_acc": final["val_acc"],
        "train/final_acc": evaluate(outcome.final, ctx.data.x_train, ctx.data.y_train)["acc"],
        "compute/epochs": float(ctx.spent_epochs),
        "epochs_run": float(ctx.spent_epochs),
        "time/fit_s": seconds,  # the whole procedure: every solution's training and scoring
        "restarts": float(len(outcome.members)),
        **{f"procedure/{k}": float(v) for k, v in outcome.metrics.items()},
    }
    metrics["gen_gap"] = metrics["train/final_acc"] - metrics["test/acc"]
    metrics.update(post_fit_metrics(outcome.final, ctx.config, ctx.data)[0])
    run_id = None
    if tracker is not None:
        tags = {**run_tags(cfg, seed), **({"execution": "vectorized"} if ctx.vectorized else {})}
        logger = tracker.logger(cfg.study, run_name(cfg, seed), tags)
        n_params = sum(p.numel() for p in outcome.final.parameters())
        logger.log_hyperparams(
            {**flatten(ctx.config), "seed": seed, "n_params": n_params, "n_train": len(ctx.data.x_train)}
        )
        for i, member in enumerate(outcome.members):
            logger.log_metrics({f"restart/{k}": float(v) for k, v in member.items()}, step=i)
        for name, values in outcome.curves.items():
            for i, v in enumerate(values):
                logger.log_metrics({f"curve/{name}": float(v)}, step=i)
        logger.log_metrics(metrics, step=0)
        logger.experiment.set_tag(logger.run_id, "outcome", "completed")
        logger.experiment.set_tag(logger.run_id, "complete", "1")
        logger.finalize("success")
        run_id = logger.run_id
    return RunResult(run_id, seed, metrics, "completed", None, outcome.final)
