"""The contract of a restart procedure: what it may use (RestartContext, implemented by the procedure executor
in training/procedure.py), what it returns (RestartOutcome), and its registry entry's flags (RestartInfo).

An entry is a procedure ``fn(ctx, **hp) -> RestartOutcome``: it draws fresh models (ctx.new_model), trains
them with the run's Lightning fit (ctx.fit / ctx.fit_fresh, which count the compute spent), scores them
(ctx.score) and returns the solution it keeps plus one record per trained solution, in training order. The
kept solution is always chosen by validation loss, never by test numbers.

``kind`` says what a procedure is, so the report knows which comparisons it belongs to:
  baseline      one ordinary training (the reference of every gain)
  independent   N independent initializations trained to the budget (``init``: the scheme, None = PyTorch's)
  perturbation  perturb a trained solution, retrain briefly, accept by a rule
  trajectory    one run whose trajectory is changed (e.g. a smoothed loss)
  snapshot      one cyclical run with a snapshot at each cycle's end
  scheduling    restarts within the budget of one run
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from techbench.registry import Info, Registry, build

KINDS = ("baseline", "independent", "perturbation", "trajectory", "snapshot", "scheduling")


@dataclass(frozen=True)
class RestartInfo(Info):
    kind: str = "independent"
    init: str | None = None  # the initialization scheme of an independent procedure (None: PyTorch's default)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"restart kind {self.kind!r} unknown; allowed: {', '.join(KINDS)}")


RESTARTS = Registry("restart", RestartInfo)


@dataclass
class RestartOutcome:
    final: nn.Module  # the solution the procedure keeps
    members: list[dict[str, float]]  # one record per trained solution: val_loss, val_acc, test_acc, ...
    metrics: dict[str, float] = field(default_factory=dict)  # the procedure's own measures (accept rate, ...)
    curves: dict[str, list[float]] = field(default_factory=dict)  # e.g. best-of-n vs n, loss along a path


class RestartContext(Protocol):
    """What a restart procedure may use: the run's data and budget, fresh models, Lightning fits, scores."""

    data: Any  # DataSplits of the run
    epochs: int  # the run's epoch budget
    spent_epochs: int  # epochs trained so far, over all solutions

    def member_seed(self, index: int) -> int:
        """The seed of the run's index-th solution: distinct across indices and across the run's seeds."""

    def new_model(self, index: int) -> nn.Module:
        """A freshly initialized model, as a sequential run with seed member_seed(index) would draw it."""

    def fit(
        self,
        model: nn.Module,
        epochs: int | None = None,
        index: int = 0,
        schedule: dict[str, Any] | None = None,
        callbacks: list | None = None,
    ) -> Any:
        """Train ``model`` in place (batch order from member_seed(index)); returns the LightningModule, whose
        ``epoch_times`` count the epochs it trained."""

    def fit_fresh(self, indices: list[int], epochs: int | None = None) -> list[nn.Module]:
        """New models for ``indices``, each trained from scratch (as one stack where the run allows it)."""

    def score(self, model: nn.Module) -> dict[str, float]:
        """val_loss, val_acc, test_loss, test_acc of a model."""

    def probs(self, model: nn.Module, split: str = "test") -> torch.Tensor:
        """Predicted probabilities on a split."""


def run_procedure(ctx: RestartContext, spec: dict[str, Any]) -> RestartOutcome:
    """Run the procedure ``{name: key, **hp}`` (missing hyperparameters take the entry's defaults)."""
    return build(RESTARTS, spec, ctx)
