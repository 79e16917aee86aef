"""Trainer factory: the ``hardware`` block of params.yaml decides devices, strategy and precision, so a
GPU or multi-node run needs no code change."""

from __future__ import annotations

import os
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger

from techbench.errors import ConfigError

# Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 on import (to keep CUDA uninitialized before a fork). On a
# machine with no CUDA device, torch then asks NVML (dlopen + init) at every torch.cuda.is_available() call,
# which Adam's step makes once per update: ~100 µs a step, a sixth of a small model's step. Where there is no
# device there is no CUDA to keep uninitialized, so the plain check is restored; GPU machines keep Lightning's.
if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1" and torch.cuda.device_count() == 0:
    del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]


CPU_PRECISIONS = ["32-true", "bf16-mixed", "bf16-true", "64-true"]


def machine_accelerators() -> list[str]:
    """The `hardware.accelerator` values this machine can run."""
    gpu = ["gpu", "cuda"] if torch.cuda.is_available() else []
    mps = ["mps"] if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else []
    return ["auto", "cpu", *gpu, *mps]


def check_hardware(hardware: dict[str, Any]) -> None:
    """ConfigError unless this machine can run the hardware block as written: the accelerator exists, and
    fp16 autocast is not asked of a CPU (Lightning would silently run bf16-mixed and the run would record
    a precision it did not use)."""
    allowed = machine_accelerators()
    if hardware["accelerator"] not in allowed:
        raise ConfigError(
            "hardware.accelerator",
            f"{hardware['accelerator']!r} is not available on this machine (no such device found by torch)",
            allowed,
        )
    on_cpu = hardware["accelerator"] == "cpu" or (hardware["accelerator"] == "auto" and allowed == ["auto", "cpu"])
    if on_cpu and hardware["precision"] not in CPU_PRECISIONS:
        raise ConfigError(
            "hardware.precision",
            f"{hardware['precision']!r} needs a CUDA device (fp16 autocast); on CPU use bf16-mixed or a float type",
            CPU_PRECISIONS,
        )
    gpus = torch.cuda.device_count() if hardware["accelerator"] in ("gpu", "cuda") else 0
    if gpus and hardware["devices"] > gpus:
        raise ConfigError("hardware.devices", f"{hardware['devices']} GPUs asked, this machine has {gpus}")


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
