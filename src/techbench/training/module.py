"""The one LightningModule every run uses: a model, a cross-entropy loss and the run's techniques
(optimizer, learning-rate schedule, weight penalty or decoupled decay; the batch regime and the dropout variant
are applied to the config and the model before this is built)."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from techbench.techniques.optimizers import OPTIMIZERS, build_optimizer


class _Running:
    """Sum of loss, correct predictions and examples over an epoch, kept as tensors: logging once per
    epoch instead of through per-step metric objects keeps the per-step overhead of small models low."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.loss, self.correct, self.n = torch.zeros(()), torch.zeros(()), 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor):
        self.loss = self.loss.to(loss.device) + loss.detach().float() * len(y)
        self.correct = self.correct.to(loss.device) + (logits.detach().argmax(1) == y).sum()
        self.n += len(y)

    def means(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = max(self.n, 1)
        return self.loss / n, self.correct.float() / n


class TechniqueModule(L.LightningModule):
    def __init__(self, model: nn.Module, run_config: dict[str, Any], num_classes: int, n_train: int = 1):
        super().__init__()
        from techbench.techniques.regularization import build_regularizer

        self.model = model
        self.cfg = run_config
        self.num_classes = num_classes
        self.regularizer = build_regularizer(run_config.get("regularizer") or {"name": "none"}, model, n_train)
        self.val_losses: list[float] = []
        self.divergence_loss = float(run_config["train"]["divergence_loss"])
        self.diverged_step: int | None = None
        self.epoch_times: list[float] = []
        self._epoch_start = 0.0
        self.running = {stage: _Running() for stage in ("train", "val", "test")}
        meta = OPTIMIZERS.get(run_config["optimizer"]["name"]).meta
        self.closure_kind = meta.get("closure", "none")
        # Newton's method needs the loss with its graph (to differentiate twice), which only manual
        # optimization hands to the optimizer; everything else uses Lightning's automatic optimization.
        self.automatic_optimization = self.closure_kind != "loss_graph"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def configure_optimizers(self):
        from techbench.techniques.schedules import build_schedule

        optimizer = build_optimizer(self.cfg["optimizer"], self.model)
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        steps = max(int(self.trainer.estimated_stepping_batches), 1)
        schedule = build_schedule(
            self.cfg.get("schedule", {"name": "constant"}),
            optimizer,
            epochs=epochs,
            steps_per_epoch=max(steps // epochs, 1),
        )
        if schedule is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def _loss(self, batch):
        x, y = batch
        logits = self(x)
        return F.cross_entropy(logits, y), logits, y

    def _objective(self, loss: torch.Tensor) -> torch.Tensor:
        """The cost the optimizer minimizes: the data loss plus weight penalties and learned-dropout terms.
        Logged losses stay the data loss, so runs with and without a penalty compare on the same scale."""
        from techbench.techniques.dropout import module_penalties

        extra = module_penalties(self.model)
        if self.regularizer.penalty is not None:
            penalty = self.regularizer.penalty(self.model)
            extra = penalty if extra is None else extra + penalty
        return loss if extra is None else loss + extra

    def on_before_optimizer_step(self, optimizer):
        # Decoupled weight decay: shrink outside the gradient, once per update, with the current LR (AdamW).
        if self.regularizer.decay:
            self.regularizer.decay_(optimizer.param_groups[0]["lr"])

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.regularizer.prox:  # L1's proximal step follows the gradient step
            self.regularizer.prox_(optimizer.param_groups[0]["lr"])

    def _diverging(self, loss: torch.Tensor) -> bool:
        if torch.isfinite(loss) and loss.item() <= self.divergence_loss:
            return False
        # A diverged run is a result: stop and let the caller record where it blew up.
        if self.diverged_step is None:
            self.diverged_step = self.global_step
        self.trainer.should_stop = True
        return True

    def training_step(self, batch, batch_idx):
        if not self.automatic_optimization:
            return self._manual_step(batch)
        loss, logits, y = self._loss(batch)
        cost = self._objective(loss)
        if self._diverging(cost):
            # Skip the update; a closure-driven optimizer (L-BFGS) needs a value, so it gets the loss.
            return cost if self.closure_kind == "backward" else None
        self.running["train"].add(loss, logits, y)
        return cost

    def _manual_step(self, batch):
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        seen = {}

        def closure():
            loss, logits, y = self._loss(batch)
            cost = self._objective(loss)
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

    def test_step(self, batch, batch_idx):
        loss, logits, y = self._loss(batch)
        self.running["test"].add(loss, logits, y)

    def _log_stage(self, stage: str):
        run = self.running[stage]
        if run.n == 0:
            return
        loss, acc = run.means()
        if self.trainer.world_size > 1:
            loss, acc = self.all_gather(loss).mean(), self.all_gather(acc).mean()
        if stage == "val" and self.trainer.state.fn == "fit":
            self.val_losses.append(float(loss))
        # Already gathered: every rank logs the same value, so callbacks (pruning, early stopping) agree.
        self.log(f"{stage}/loss", loss, on_epoch=True)
        self.log(f"{stage}/acc", acc, on_epoch=True)
        run.reset()

    def on_train_epoch_start(self):
        self._epoch_start = time.perf_counter()
        self.running["train"].reset()

    def on_train_epoch_end(self):
        # Metrics logged here are written once per epoch with step = epoch, so MLflow's x-axis is the epoch.
        seconds = time.perf_counter() - self._epoch_start
        self.epoch_times.append(seconds)
        self._log_stage("train")
        self.log("time/epoch_s", seconds, on_epoch=True)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_epoch=True)
        self.log("step", float(self.current_epoch), on_epoch=True)

    def on_validation_epoch_start(self):
        self.running["val"].reset()

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        self._log_stage("val")
        if self.trainer.state.fn == "fit":
            # Validation metrics are flushed separately from training ones; give them the epoch as step too.
            self.log("step", float(self.current_epoch), on_epoch=True)

    def on_test_epoch_start(self):
        self.running["test"].reset()

    def on_test_epoch_end(self):
        self._log_stage("test")

    @property
    def diverged(self) -> bool:
        return self.diverged_step is not None
