"""The one LightningModule every run uses: a model, the workload's loss and the run's techniques. The optimizer
and the scheduler come from their families' ``build``; the cost adds every family's objective (weight penalties,
concrete dropout's terms) with decoupled decay and L1's proximal step around the optimizer step. The batch
regime and the dropout variant were applied to the configuration and the model before this is built."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from techbench.specs import EffectiveRun
from techbench.techniques import FAMILIES, OPTIMIZERS, Objective
from techbench.workloads import loss_fn

CURVES = ("train/loss", "train/acc", "val/loss", "val/acc", "lr", "time/epoch_s")  # per epoch, step = epoch


class Running:
    """Sum of loss, correct predictions and examples over an epoch: logging once per epoch instead of through
    per-step metric objects keeps the per-step overhead of small models low. A training step hands its loss
    as the float it has already read (the divergence check), so only the correct count is a tensor op."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.loss, self.correct, self.n = 0.0, None, 0

    def add(self, loss: torch.Tensor | float, logits: torch.Tensor, y: torch.Tensor):
        value = loss if isinstance(loss, float) else float(loss.detach())
        self.loss += value * len(y)
        correct = (logits.detach().argmax(1) == y).sum()
        self.correct = correct if self.correct is None else self.correct + correct
        self.n += len(y)

    def means(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = max(self.n, 1)
        correct = torch.zeros(()) if self.correct is None else self.correct.float().cpu()
        return torch.tensor(self.loss / n), correct / n


class LeanHooks:
    """Lightning names the hook it is in by setting ``_current_fx_name`` on the module, twice per hook call:
    ~50 assignments a training step, each through nn.Module.__setattr__'s parameter/buffer/submodule checks.
    The name is a plain string attribute, so it is stored directly."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


class FitLog:
    """What a fit leaves for its run record: per-epoch values, epoch times and the divergence step. Under a
    spawning DDP strategy the module trains in other processes, so rank 0 also writes it to ``outbox``."""

    def __init__(self, outbox: Path | None = None):
        self.epochs: dict[int, dict[str, float]] = {}
        self.epoch_times: list[float] = []
        self.diverged_step: int | None = None
        self.global_step = 0
        self.outbox = outbox

    def put(self, epoch: int, values: dict[str, float]) -> None:
        self.epochs.setdefault(epoch, {}).update(values)

    def histories(self) -> dict[str, list[float]]:
        n = max(self.epochs, default=-1) + 1
        keys = list(dict.fromkeys(k for e in self.epochs.values() for k in e))
        return {k: [self.epochs.get(e, {}).get(k, float("nan")) for e in range(n)] for k in keys}

    def dump(self) -> None:
        if self.outbox is not None:
            state = {
                "epochs": self.epochs,
                "epoch_times": self.epoch_times,
                "diverged_step": self.diverged_step,
                "global_step": self.global_step,
            }
            self.outbox.write_text(json.dumps(state))

    def load(self) -> None:
        """Take over rank 0's log when the fit ran in spawned processes (this process's copy is empty)."""
        if self.outbox is not None and self.outbox.is_file() and not self.epoch_times:
            state = json.loads(self.outbox.read_text())
            self.epochs = {int(k): v for k, v in state["epochs"].items()}
            self.epoch_times, self.diverged_step = state["epoch_times"], state["diverged_step"]
            self.global_step = state["global_step"]


class TechniqueModule(LeanHooks, L.LightningModule):
    def __init__(self, model: nn.Module, run: EffectiveRun, log: FitLog | None = None):
        super().__init__()
        self.model = model
        self.run = run
        self.objective = Objective.combine([f.objective(run[f.name], model, run.n_train) for f in FAMILIES])
        self._penalty = self.objective.penalty  # built once: _cost runs every step
        self._batch_terms = self.objective.batch_terms
        self.divergence_loss = float(run.train["divergence_loss"])
        self._last_cost = 0.0
        self._batch_counted = False
        self.log_ = log or FitLog()
        self.running = {stage: Running() for stage in ("train", "val")}
        self._epoch_start = 0.0
        self.closure_kind = OPTIMIZERS.get(run["optimizer"]["name"]).info.closure
        # Newton's method needs the loss with its graph (to differentiate twice), which only manual
        # optimization hands to the optimizer; everything else uses Lightning's automatic optimization.
        self.automatic_optimization = self.closure_kind != "loss_graph"

    @property
    def epoch_times(self) -> list[float]:
        return self.log_.epoch_times

    @property
    def diverged_step(self) -> int | None:
        return self.log_.diverged_step

    @property
    def diverged(self) -> bool:
        return self.log_.diverged_step is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def configure_optimizers(self):
        return configure(self, self.model, self.run)

    def _loss(self, batch):
        x, y = batch
        logits = self(x)
        return loss_fn(logits, y), logits, y

    def _cost(self, loss: torch.Tensor, batch, logits: torch.Tensor) -> torch.Tensor:
        """The cost the optimizer minimizes: the data loss plus every family's penalty and batch terms. Logged
        losses stay the data loss, so runs with and without a penalty compare on the same scale."""
        cost = loss if self._penalty is None else loss + self._penalty(self.model)
        if self._batch_terms is not None:
            cost = cost + self._batch_terms(batch[0], batch[1], logits, loss)
        return cost

    def on_before_optimizer_step(self, optimizer):
        # Decoupled weight decay: shrink outside the gradient, once per update, with the current LR (AdamW).
        if self.objective.decay:
            self.objective.decay_(optimizer.param_groups[0]["lr"])

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.objective.prox:  # L1's proximal step follows the gradient step
            self.objective.prox_(optimizer.param_groups[0]["lr"])

    def _diverging(self, loss: torch.Tensor) -> bool:
        value = loss.item()  # one read per step: the check and the epoch's running loss
        if math.isfinite(value) and value <= self.divergence_loss:
            self._last_cost = value
            return False
        # A diverged run is a result: stop and let the caller record where it blew up.
        if self.log_.diverged_step is None:
            self.log_.diverged_step = self.global_step
        self.trainer.should_stop = True
        return True

    def training_step(self, batch, batch_idx):
        if not self.automatic_optimization:
            return self._manual_step(batch)
        loss, logits, y = self._loss(batch)
        cost = self._cost(loss, batch, logits)
        if self._diverging(cost):
            # Skip the update; a closure-driven optimizer (L-BFGS) needs a value, so it gets the loss.
            return cost if self.closure_kind == "backward" else None
        if not self._batch_counted:  # L-BFGS evaluates the loss again in its line search: count the first only
            self._batch_counted = True
            self.running["train"].add(self._last_cost if cost is loss else loss, logits, y)
        return cost * micro_batch_weight(self.trainer, self.run, batch_idx, len(y))

    def on_train_batch_start(self, batch, batch_idx):
        self._batch_counted = False

    def _manual_step(self, batch):
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        seen = {}

        def closure():
            loss, logits, y = self._loss(batch)
            cost = self._cost(loss, batch, logits)
            seen.update(loss=loss, cost=cost, logits=logits, y=y)
            return cost

        optimizer.zero_grad()
        optimizer.step(closure=closure)
        if self._diverging(seen["cost"].detach()):
            return None
        self.running["train"].add(seen["loss"], seen["logits"], seen["y"])
        if scheduler is not None and not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step()
        return None

    def validation_step(self, batch, batch_idx):
        loss, logits, y = self._loss(batch)
        self.running["val"].add(loss, logits, y)

    def _log_stage(self, stage: str) -> dict[str, float]:
        run = self.running[stage]
        if run.n == 0:
            return {}
        loss, acc = (v.to(self.device) for v in run.means())
        if self.trainer.world_size > 1:
            loss, acc = self.all_gather(loss).mean(), self.all_gather(acc).mean()
        # Already gathered: every rank logs the same value, so callbacks (pruning, early stopping) agree.
        self.log(f"{stage}/loss", loss, on_epoch=True)
        self.log(f"{stage}/acc", acc, on_epoch=True)
        run.reset()
        return {f"{stage}/loss": float(loss), f"{stage}/acc": float(acc)}

    def on_train_epoch_start(self):
        self._epoch_start = time.perf_counter()
        self.running["train"].reset()

    def on_train_epoch_end(self):
        seconds = time.perf_counter() - self._epoch_start
        self.log_.epoch_times.append(seconds)
        values = self._log_stage("train")
        values.update({"time/epoch_s": seconds, "lr": float(self.trainer.optimizers[0].param_groups[0]["lr"])})
        self.log_.put(self.current_epoch, values)

    def on_validation_epoch_start(self):
        self.running["val"].reset()

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        values = self._log_stage("val")
        if self.trainer.state.fn == "fit":
            self.log_.put(self.current_epoch, values)
            scheduler = None if self.automatic_optimization else self.lr_schedulers()
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and values:
                scheduler.step(values["val/loss"])  # manual optimization (Newton): Lightning steps no scheduler

    def on_fit_end(self):
        self.log_.global_step = int(self.trainer.global_step)
        if self.trainer.world_size > 1 and self.trainer.is_global_zero:
            self.log_.dump()


def micro_batch_weight(trainer: L.Trainer, run: EffectiveRun, batch_idx: int, size: int) -> float:
    """Lightning divides each micro-batch's cost by k; weighting it by k·size/|group| makes the k summed
    gradients the gradient of the mean over the group's examples, so accumulation equals one batch of k·b
    also in each epoch's last, partial group (and when the last micro-batch is smaller)."""
    k = int(run.train["accumulate_grad_batches"])
    if k == 1:
        return 1.0
    loader = trainer.train_dataloader
    step = k * loader.batch_size
    start = (batch_idx // k) * step
    return k * size / (min(start + step, loader.per_rank) - start)


def configure(module: L.LightningModule, params: Any, run: EffectiveRun):
    """The run's optimizer over ``params`` (a model, or a stack of models) and its LR scheduler, both built by
    their families: the single, stacked and procedure executors share this one configuration."""
    optimizer = FAMILIES["optimizer"].build(run["optimizer"], params)
    if isinstance(params, nn.Module):  # one model (a stack's members share one parameter tensor)
        for family in FAMILIES:
            family.shape_optimizer(run[family.name], optimizer, params)
    epochs = max(int(module.trainer.max_epochs or 1), 1)
    steps = max(int(module.trainer.estimated_stepping_batches), 1)
    schedule = FAMILIES["schedule"].build(
        run["schedule"], optimizer, epochs=epochs, steps_per_epoch=max(steps // epochs, 1)
    )
    return optimizer if schedule is None else {"optimizer": optimizer, "lr_scheduler": schedule}
