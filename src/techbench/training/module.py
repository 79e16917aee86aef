"""The one LightningModule every run uses: a model, a cross-entropy loss and the run's techniques
(optimizer, learning-rate schedule; the batch regime is applied to the config before this is built)."""

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
    def __init__(self, model: nn.Module, run_config: dict[str, Any], num_classes: int):
        super().__init__()
        self.model = model
        self.cfg = run_config
        self.num_classes = num_classes
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
        if self._diverging(loss):
            # Skip the update; a closure-driven optimizer (L-BFGS) needs a value, so it gets the loss.
            return loss if self.closure_kind == "backward" else None
        self.running["train"].add(loss, logits, y)
        return loss

    def _manual_step(self, batch):
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        seen = {}

        def closure():
            loss, logits, y = self._loss(batch)
            seen.update(loss=loss, logits=logits, y=y)
            return loss

        optimizer.zero_grad()
        optimizer.step(closure=closure)
        if self._diverging(seen["loss"].detach()):
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
