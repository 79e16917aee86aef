"""The procedure executor: one run of a procedure family (restarts) per (config, seed). The procedure
(techniques/restarts) trains several solutions through a ProcedureContext — every solution a Lightning fit of
the same TechniqueModule every run uses (fit.py), independent restarts as one stack where the study runs
``execution: vectorized`` — and keeps one; its run logs the kept solution's metrics (the shared post-fit
evaluation), every solution as ``restart/<measure>`` histories (step = solution index), the procedure's own
measures (``procedure/*``), its curves (``curve/*``) and the compute spent (``compute/epochs``)."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import lightning as L
import torch
from torch import nn

from techbench.specs import RunConfig
from techbench.techniques.restarts import run_procedure
from techbench.training.effective import build_run_model, resolve
from techbench.training.evaluation import measure
from techbench.training.fit import fit
from techbench.training.module import TechniqueModule
from techbench.training.result import RunResult
from techbench.training.stacked import train_stacked, unstackable
from techbench.workloads import load_dataset
from techbench.workloads.evaluation import evaluate, predict_probs

log = logging.getLogger("techbench")


class ProcedureContext:
    """What a procedure may use (techniques/restarts/contract.RestartContext): the run's data and budget,
    fresh models, Lightning fits, scores."""

    def __init__(self, cfg: RunConfig, seed: int, execution: str = "sequential"):
        self.cfg, self.seed, self.execution = cfg, seed, execution
        self.data = load_dataset(cfg.data, seed)
        self.run = resolve(cfg, self.data)
        self.epochs = int(self.run.train["epochs"])
        self.spent_epochs = 0  # compute accounting: epochs trained over all solutions
        self.vectorized = False  # set once independent restarts were trained as one stack

    def member_seed(self, index: int) -> int:
        return self.seed * 100_003 + index

    def new_model(self, index: int) -> nn.Module:
        L.seed_everything(self.member_seed(index), workers=True, verbose=False)
        return build_run_model(self.run, self.data)

    def fit(
        self,
        model: nn.Module,
        epochs: int | None = None,
        index: int = 0,
        schedule: dict[str, Any] | None = None,
        callbacks: list | None = None,
    ) -> TechniqueModule:
        run = self.run.replace(
            train={"epochs": int(epochs or self.epochs)}, **({"schedule": schedule} if schedule else {})
        )
        result = fit(run, model, self.data, self.member_seed(index), callbacks, reseed=True)
        self.spent_epochs += result.epochs_run
        return result.module

    def fit_fresh(self, indices: list[int], epochs: int | None = None) -> list[nn.Module]:
        cfg = replace(self.cfg, train={**self.cfg.train, "epochs": int(epochs or self.epochs)})
        if self.execution == "vectorized" and len(indices) > 1:
            why = unstackable(resolve(cfg, self.data), self.data)
            if why is None:
                # Every restart trains on the run's own data (a resampled training set belongs to the run's seed).
                results = train_stacked(cfg, [self.member_seed(i) for i in indices], data=self.data)
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


def train_procedure(cfg: RunConfig, seed: int, execution: str = "sequential") -> RunResult:
    """Run the config's procedure for one seed: one result (one MLflow run) for all the solutions it trained."""
    ctx = ProcedureContext(cfg, seed, execution)
    start = time.perf_counter()
    outcome = run_procedure(ctx, ctx.run[cfg.family])
    seconds = time.perf_counter() - start
    final = ctx.score(outcome.final)
    metrics, probs = measure(ctx.run, outcome.final, ctx.data)
    metrics.update(
        {
            "final/val_loss": final["val_loss"],
            "final/val_acc": final["val_acc"],
            "compute/epochs": float(ctx.spent_epochs),
            "epochs_run": float(ctx.spent_epochs),
            "time/fit_s": seconds,  # the whole procedure: every solution's training and scoring
            "restarts": float(len(outcome.members)),
            **{f"procedure/{k}": float(v) for k, v in outcome.metrics.items()},
        }
    )
    histories = {f"restart/{k}": [float(m.get(k, "nan")) for m in outcome.members] for k in _keys(outcome.members)}
    histories.update({f"curve/{name}": [float(v) for v in values] for name, values in outcome.curves.items()})
    return RunResult(
        run=ctx.run,
        seed=seed,
        metrics=metrics,
        histories=histories,
        model=outcome.final,
        predictions=(probs, ctx.data.y_test),
        tags={"execution": "vectorized"} if ctx.vectorized else {},
    )


def _keys(members: list[dict[str, float]]) -> list[str]:
    return list(dict.fromkeys(k for m in members for k in m))
