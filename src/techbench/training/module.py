"""The one LightningModule every run uses: a model, a cross-entropy loss and the run's techniques."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from techbench.techniques.optimizers import build_optimizer


class TechniqueModule(L.LightningModule):
    def __init__(self, model: nn.Module, run_config: dict[str, Any], num_classes: int):
        super().__init__()
        self.model = model
        self.cfg = run_config
        self.divergence_loss = float(run_config["train"]["divergence_loss"])
        self.diverged_step: int | None = None
        self.epoch_times: list[float] = []
        self._epoch_start = 0.0
        acc = {"task": "multiclass", "num_classes": num_classes, "average": "micro"}
        self.train_acc = torchmetrics.Accuracy(**acc)
        self.val_acc = torchmetrics.Accuracy(**acc)
        self.test_acc = torchmetrics.Accuracy(**acc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def configure_optimizers(self):
        return build_optimizer(self.cfg["optimizer"], self.model)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        if not torch.isfinite(loss) or loss.item() > self.divergence_loss:
            # A diverged run is a result: stop, skip this update, and let the caller record where it blew up.
            self.diverged_step = self.global_step
            self.trainer.should_stop = True
            return None
        self.train_acc(logits.detach(), y)
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def _eval_step(self, batch, stage: str, metric: torchmetrics.Metric):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        metric(logits, y)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
        self.log(f"{stage}/acc", metric, on_step=False, on_epoch=True)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val", self.val_acc)

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test", self.test_acc)

    def on_train_epoch_start(self):
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self):
        # Metrics logged here are written once per epoch with step = epoch, so MLflow's x-axis is the epoch.
        seconds = time.perf_counter() - self._epoch_start
        self.epoch_times.append(seconds)
        self.log("time/epoch_s", seconds, on_epoch=True)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_epoch=True)
        self.log("step", float(self.current_epoch), on_epoch=True)

    def on_validation_epoch_end(self):
        # Validation metrics are flushed separately from training ones; give them the epoch as step too.
        if not self.trainer.sanity_checking and self.trainer.state.fn == "fit":
            self.log("step", float(self.current_epoch), on_epoch=True)

    @property
    def diverged(self) -> bool:
        return self.diverged_step is not None
