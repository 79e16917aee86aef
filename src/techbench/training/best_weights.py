"""Keep the best-validation weights of a run: Lightning's ModelCheckpoint (top 1 by validation loss, weights
only) writing into a temporary folder that lives as long as the run needs it."""

from __future__ import annotations

import tempfile

import torch
from lightning.pytorch.callbacks import ModelCheckpoint

MONITOR = "val/loss"


class BestWeights(ModelCheckpoint):
    def __init__(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="techbench-best-")
        super().__init__(dirpath=self._tmp.name, monitor=MONITOR, mode="min", save_top_k=1, save_weights_only=True)
        self.best_epoch = 0  # 1-based: the number of epochs trained when the best weights were saved

    def state(self) -> dict[str, torch.Tensor]:
        """The best checkpoint's state dict (read once; the folder is removed afterwards)."""
        ckpt = torch.load(self.best_model_path, map_location="cpu", weights_only=True)
        self.best_epoch = int(ckpt["epoch"]) + 1
        self._tmp.cleanup()
        return ckpt["state_dict"]
