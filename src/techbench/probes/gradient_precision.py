"""Gradient computation probes, part 4: mixed precision training (autocast) against float32."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from techbench.probes import PROBES, ProbeContext, ProbeResult
from techbench.probes.gradient_common import (
    FAMILY,
    hardware_note,
    median_seconds,
    probe_device,
    study_model,
    threaded,
)
from techbench.workloads import load_dataset

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class _Trainer:
    """The study's model with Adam, trained in float32 (amp=None) or under autocast(amp); float16 uses a
    GradScaler because its narrow exponent range flushes small gradients to zero (bfloat16 needs none)."""

    def __init__(self, ctx: ProbeContext, hp: dict[str, Any], data, device: torch.device, amp: torch.dtype | None):
        self.device, self.amp = device, amp
        self.model = study_model(ctx, data, torch.float32, device)  # same seed → same initial weights
        self.opt = torch.optim.Adam(self.model.parameters(), lr=float(hp["lr"]))
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with self.autocast():
            loss = nn.functional.cross_entropy(self.model(x), y)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.model.eval()
        with self.autocast():
            acc = (self.model(x).argmax(1) == y).float().mean().item()
        self.model.train()
        return acc


def _train(trainer: _Trainer, data, hp: dict[str, Any], seed: int) -> float:
    """``epochs`` epochs in the same batch order for every precision; returns the test accuracy."""
    x, y = data.x_train.to(trainer.device), data.y_train.to(trainer.device)
    g = torch.Generator().manual_seed(seed)
    bs = min(int(hp["batch_size"]), len(x))
    for _ in range(int(hp["epochs"])):
        perm = torch.randperm(len(x), generator=g).to(trainer.device)
        for i in range(0, len(x) - bs + 1, bs):
            trainer.step(x[perm[i : i + bs]], y[perm[i : i + bs]])
    return trainer.accuracy(data.x_test.to(trainer.device), data.y_test.to(trainer.device))


def _underflow_share(trainer: _Trainer, x: torch.Tensor, y: torch.Tensor, scale: float) -> float:
    """Share of the gradient entries that are nonzero in float32 but zero after a float16 autocast backward
    of loss·scale (then divided by scale): the gradients lost to float16 underflow."""
    model, grads = trainer.model, {}
    for tag, amp in (("fp32", None), ("fp16", torch.float16)):
        with torch.autocast(x.device.type, dtype=torch.float16, enabled=amp is not None):
            loss = nn.functional.cross_entropy(model(x), y) * (scale if amp else 1.0)
        grads[tag] = torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.parameters()))])
    nonzero = grads["fp32"] != 0
    return float(((grads["fp16"] == 0) & nonzero).sum() / nonzero.sum().clamp_min(1))


@PROBES.register(
    "mixed_precision",
    description="float32 vs autocast mixed precision (bf16 on CPU, fp16 + GradScaler on CUDA): speed, accuracy",
    defaults={
        "epochs": 20,  # MNIST-1D MLP: ~60% test accuracy, about 1 s per precision on 2 CPU cores
        "batch_size": 128,
        "lr": 3e-3,
        "timed_steps": 50,
        "warmup": 5,
        "cpu_dtype": "bfloat16",
        "cuda_dtype": "float16",
        "loss_scale": 65536.0,
        "threads": 1,  # see gradient_common.threaded; 0 = torch's default
    },
    topic=FAMILY,
)
@threaded
def mixed_precision(ctx: ProbeContext, **hp) -> ProbeResult:
    device = probe_device(ctx)
    amp = AMP_DTYPES[hp["cuda_dtype"] if device.type == "cuda" else hp["cpu_dtype"]]
    data = load_dataset(ctx.data)
    label = f"{hp['cuda_dtype' if device.type == 'cuda' else 'cpu_dtype']} autocast"
    label += " + GradScaler" if amp == torch.float16 else ""
    trainers = {"fp32": _Trainer(ctx, hp, data, device, None), label: _Trainer(ctx, hp, data, device, amp)}
    acc = {name: _train(t, data, hp, ctx.seed) for name, t in trainers.items()}
    # Step time on one fixed batch, the two precisions interleaved (after training: Adam state exists).
    bs = min(int(hp["batch_size"]), len(data.x_train))
    x, y = data.x_train[:bs].to(device), data.y_train[:bs].to(device)
    fns = {name: functools.partial(t.step, x, y) for name, t in trainers.items()}
    secs = median_seconds(fns, device, int(hp["timed_steps"]), int(hp["warmup"]))
    rows = [{"row": name, "step_ms": 1e3 * secs[name], "test_acc": acc[name]} for name in trainers]
    rows[1].update(speedup_vs_fp32=secs["fp32"] / secs[label], acc_diff_pp=100 * (acc[label] - acc["fp32"]))
    fp32 = trainers["fp32"]
    rows.append(
        {
            "row": "float16 gradient underflow (trained fp32 model)",
            "share_unscaled": _underflow_share(fp32, x, y, 1.0),
            "share_scaled": _underflow_share(fp32, x, y, float(hp["loss_scale"])),
        }
    )
    note = (
        f"Study model trained {hp['epochs']} epochs (Adam lr {hp['lr']}, batch {bs}, same seed, init and batch "
        f"order) in float32 and under torch.autocast({device.type}, {amp}); test_acc after training (evaluated "
        f"in the training precision). step_ms: median of {hp['timed_steps']} training steps on one batch, the "
        f"precisions interleaved; speedup_vs_fp32 = fp32 step time / mixed step time (> 1: mixed is faster); "
        f"acc_diff_pp = mixed − fp32 test accuracy in percentage points. Underflow row: share of nonzero float32 "
        f"gradient entries that a float16 autocast backward returns as 0, without and with loss scale "
        f"{hp['loss_scale']:g}. On CPU, bfloat16 autocast adds casts and has no fast tensor cores, so it may be "
        f"slower than float32."
    )
    return ProbeResult(rows=rows, notes=[note, hardware_note(device)])
