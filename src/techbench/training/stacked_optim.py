"""The optimizer of a stack (stack_module.py): one (K, P) parameter updated by the optimizer entry's stacked rule
(techniques/stacked_updates.py), with each member's hyperparameters as (K, 1) columns and each member's learning
rate at every update read from a table built from its schedule's formula (ScheduleInfo.lr_at, the function the
tests hold torch's schedulers to). A member that stopped keeps its row: the rule updates every row, then the
stopped rows are put back; the columns of frozen parameters (requires_grad False in every member: a frozen
source backbone) are put back the same way."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from techbench.registry import hyperparameters
from techbench.specs import EffectiveRun
from techbench.techniques import OPTIMIZERS, SCHEDULES


class StackedOptimizer(torch.optim.Optimizer):
    def __init__(
        self,
        flat: torch.nn.Parameter,
        segments,
        rule,
        hp: dict[str, Any],
        lr_table: torch.Tensor,
        objective=None,
        frozen_columns: torch.Tensor | None = None,
    ):
        super().__init__([flat], {"lr": float(lr_table[0].mean())})
        self.rule, self.segments, self.hp, self.lr_table = rule, segments, hp, lr_table
        self.objective = objective  # the members' decoupled decay and proximal steps (StackedObjective), if any
        self.active = torch.ones(lr_table.shape[1], dtype=torch.bool)
        self.frozen_columns = frozen_columns  # (P,) bool: parameters no member trains (a frozen source); None: none
        self.t = 0  # updates made

    @property
    def current_lr(self) -> torch.Tensor:
        """(K,): the learning rate of each member's next update."""
        return self.lr_table[min(self.t, len(self.lr_table) - 1)]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        p = self.param_groups[0]["params"][0]
        if p.grad is None:
            return loss
        hp = {**self.hp, "lr": self.current_lr.unsqueeze(1)}  # a column: the schedule moves every member's LR
        self.t += 1
        frozen = (~self.active).nonzero().flatten()
        kept = p[frozen].clone() if len(frozen) else None
        still = p[:, self.frozen_columns].clone() if self.frozen_columns is not None else None
        if self.objective is not None:  # decoupled decay before the step, L1's proximal step after, as alone
            self.objective.decay_(p, hp["lr"])
        self.rule(p, p.grad, self.state[p], hp, self.t, self.segments)
        if self.objective is not None:
            self.objective.prox_(p, hp["lr"])
        if kept is not None:
            p[frozen] = kept
        if still is not None:  # frozen parameters stay bit-identical, whatever the rule would have done
            p[:, self.frozen_columns] = still
        self.param_groups[0]["lr"] = float(self.current_lr.mean())
        return loss


def member_hyperparameters(runs: list[EffectiveRun]) -> tuple[Any, dict[str, torch.Tensor]]:
    """The entry's stacked rule and every hyperparameter as a (K, 1) float64 column; ValueError if the members do
    not share one optimizer with a stacked rule."""
    names = {run["optimizer"]["name"] for run in runs}
    if len(names) != 1:
        raise ValueError(f"a stack trains one optimizer, got {sorted(names)}")
    entry = OPTIMIZERS.get(names.pop())
    if entry.info.stacked is None:
        raise ValueError(f"optimizer {entry.name} has no stacked update rule")
    hps = [hyperparameters(entry, run["optimizer"]) for run in runs]
    columns = {key: torch.tensor([[float(h[key])] for h in hps], dtype=torch.float64) for key in hps[0]}
    # A hyperparameter every member shares is a Python float, as in the optimizer itself (exact, in-place ops).
    return entry.info.stacked, {k: float(c[0, 0]) if bool((c == c[0, 0]).all()) else c for k, c in columns.items()}


def lr_table(runs: list[EffectiveRun], base_lrs: list[float], total_steps: int, steps_per_epoch: int) -> torch.Tensor:
    """(total_steps + 1, K) float64: the LR of each member's update t, from its schedule's formula."""
    columns = []
    for run, base in zip(runs, base_lrs, strict=True):
        entry = SCHEDULES.get(run["schedule"]["name"])
        if entry.info.lr_at is None:
            raise ValueError(f"schedule {entry.name} has no formula (lr_at) to stack")
        hp = hyperparameters(entry, run["schedule"])
        columns.append([entry.info.lr_at(t, base, total_steps, steps_per_epoch, **hp) for t in range(total_steps + 1)])
    return torch.tensor(columns, dtype=torch.float64).T.contiguous()


def configure_stack(
    module: L.LightningModule, flat, segments, runs: list[EffectiveRun], objective=None, frozen_columns=None
):
    """The stack's optimizer, each member's schedule folded into its LR table (same step count as ``configure``)."""
    rule, hp = member_hyperparameters(runs)
    epochs = max(int(module.trainer.max_epochs or 1), 1)
    steps = max(int(module.trainer.estimated_stepping_batches), 1)
    per_epoch = max(steps // epochs, 1)
    base = [float(hp["lr"])] * len(runs) if isinstance(hp["lr"], float) else [float(v) for v in hp["lr"].flatten()]
    table = lr_table(runs, base, epochs * per_epoch, per_epoch)
    return StackedOptimizer(flat, segments, rule, hp, table, objective, frozen_columns)
