"""Trainer factory: the ``hardware`` block of params.yaml decides devices, strategy and precision, so a
GPU or multi-node run needs no code change."""

from __future__ import annotations

import os
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger

# Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 on import (to keep CUDA uninitialized before a fork). On a
# machine with no CUDA device, torch then asks NVML (dlopen + init) at every torch.cuda.is_available() call,
# which Adam's step makes once per update: ~100 µs a step, a sixth of a small model's step. Where there is no
# device there is no CUDA to keep uninitialized, so the plain check is restored; GPU machines keep Lightning's.
if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1" and torch.cuda.device_count() == 0:
    del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]


def make_trainer(
    hardware: dict[str, Any],
    train: dict[str, Any],
    logger: Logger | bool = False,
    callbacks: list | None = None,
) -> L.Trainer:
    callbacks = callbacks or []
    return L.Trainer(
        accelerator=hardware["accelerator"],
        devices=hardware["devices"],
        num_nodes=hardware["num_nodes"],
        strategy=hardware["strategy"],
        precision=hardware["precision"],
        deterministic=hardware["deterministic"],
        max_epochs=int(train["epochs"]),
        accumulate_grad_batches=int(train.get("accumulate_grad_batches", 1)),
        gradient_clip_val=float(train["grad_clip"]) or None,
        logger=logger,
        callbacks=callbacks,
        # Per-step overhead dominates small models: no progress bar, summary, sanity check or checkpoints
        # (unless a technique asks for its best weights).
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        num_sanity_val_steps=0,
        log_every_n_steps=1_000_000,
    )
