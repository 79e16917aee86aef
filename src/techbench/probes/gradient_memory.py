"""Gradient computation probes, part 3: what trades memory or precision for speed. Gradient checkpointing
(recompute activations in backward), gradient accumulation (micro-batches summed before one update) and
mixed precision (fp16/bf16 autocast)."""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint_sequential

from techbench.probes import PROBES, ProbeContext, ProbeResult
from techbench.probes.gradient_common import (
    DTYPES,
    FAMILY,
    hardware_note,
    log_slope,
    median_seconds,
    probe_device,
    rel_diff,
    sample_batch,
    study_model,
    threaded,
)
from techbench.training.memory import peak_step_memory, saved_tensor_bytes, tracked_step_memory

MB = 2**20


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


def _step_memory(fn, device: torch.device, resident: list) -> tuple[float, float]:
    """(whole-step peak, activation peak) in MB; on CPU both come from one tracked step."""
    tracked = tracked_step_memory(fn, resident)
    peak = peak_step_memory(fn, device, resident) if device.type == "cuda" else tracked.peak
    return peak / MB, tracked.activations / MB


# ---- gradient checkpointing -----------------------------------------------------------------------------------


def _deep_mlp(n: int, width: int) -> nn.Sequential:
    # One child per block, so checkpoint_sequential cuts segments between blocks, never inside one.
    return nn.Sequential(*[nn.Sequential(nn.Linear(width, width), nn.ReLU()) for _ in range(n)])


def _checkpoint_one(n: int, hp: dict[str, Any], seed: int, device: torch.device) -> dict[str, float]:
    torch.manual_seed(seed)
    width, batch = int(hp["width"]), int(hp["batch_size"])
    model = _deep_mlp(n, width).to(device)
    x, target = torch.randn(batch, width, device=device), torch.randn(batch, width, device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)  # stateless: the memory difference is activations
    segments = max(1, round(math.sqrt(n)))

    def forward(ckpt: bool) -> torch.Tensor:
        out = checkpoint_sequential(model, segments, x, use_reentrant=False) if ckpt else model(x)
        return nn.functional.mse_loss(out, target)

    def step(ckpt: bool) -> None:
        opt.zero_grad(set_to_none=True)
        forward(ckpt).backward()
        opt.step()

    out: dict[str, float] = {"segments": float(segments)}
    grads = {}
    for ckpt, tag in ((False, "plain"), (True, "ckpt")):  # before any optimizer step: same parameters
        opt.zero_grad(set_to_none=True)
        forward(ckpt).backward()
        grads[tag] = _grads(model)
    steps = {"plain": functools.partial(step, False), "ckpt": functools.partial(step, True)}
    resident = [model, opt, x, target]
    for tag, fn in steps.items():
        out[f"peak_mb_{tag}"], out[f"act_mb_{tag}"] = _step_memory(fn, device, resident)
        out[f"saved_mb_{tag}"] = saved_tensor_bytes(functools.partial(forward, tag == "ckpt"), model.parameters()) / MB
    for tag, sec in median_seconds(steps, device, hp["repeats"], hp["warmup"]).items():
        out[f"step_ms_{tag}"] = 1e3 * sec
    for m in ("peak_mb", "act_mb", "saved_mb"):
        out[m.replace("_mb", "_ratio")] = out[f"{m}_ckpt"] / out[f"{m}_plain"]
    out["time_ratio"] = out["step_ms_ckpt"] / out["step_ms_plain"]
    out["rel_grad_diff"] = rel_diff(grads["ckpt"], grads["plain"])
    return out


CHECKPOINT_NOTE = (
    "Deep MLP of n blocks Linear({width})+ReLU, batch {batch_size}, MSE to random targets, SGD step; "
    "checkpointed = torch.utils.checkpoint.checkpoint_sequential with round(√n) segments (non-reentrant). "
    "peak_mb: peak memory of one step (CUDA: max_memory_allocated; CPU: live tensor bytes, see training/memory.py); "
    "act_mb: the same peak without parameters, gradients and optimizer state (activations, batch, backward "
    "temporaries, recomputed segments); saved_mb: bytes autograd holds for backward at the end of the forward. "
    "*_ratio = checkpointed / plain. *_exponent_*: log-log least-squares slope of the memory against n over all "
    "depths (O(n) → 1, O(√n) → 0.5); *_exponent_*_top: the slope between the two largest depths, which the "
    "n-independent part (batch, targets, loss temporaries) biases less."
)


@PROBES.register(
    "grad_checkpointing",
    description="peak memory and step time of a deep MLP with and without √n-segment gradient checkpointing",
    # Width 128 at batch 256: a block's activations are twice its weights, so checkpointing shows in the
    # whole-step peak too; ~4 s on 2 idle CPU cores (the n=256 step is ~6 GFLOP).
    defaults={"depths": [4, 16, 64, 256], "width": 128, "batch_size": 256, "repeats": 5, "warmup": 1, "threads": 1},
    topic=FAMILY,
)
@threaded
def grad_checkpointing(ctx: ProbeContext, **hp) -> ProbeResult:
    device = probe_device(ctx)
    ns = [int(n) for n in hp["depths"]]
    per_n = {n: _checkpoint_one(n, hp, ctx.seed, device) for n in ns}
    rows = [{"row": f"n={n}", **m} for n, m in per_n.items()]
    fit = {"row": "scaling in n"}
    curves = {}
    for m in ("act_mb", "peak_mb"):
        for tag in ("plain", "ckpt"):
            ys = [per_n[n][f"{m}_{tag}"] for n in ns]
            fit[f"{m.removesuffix('_mb')}_exponent_{tag}"] = log_slope(ns, ys)
            fit[f"{m.removesuffix('_mb')}_exponent_{tag}_top"] = log_slope(ns[-2:], ys[-2:])
        curves[m] = {
            "x": ns,
            "plain": [per_n[n][f"{m}_plain"] for n in ns],
            "ckpt": [per_n[n][f"{m}_ckpt"] for n in ns],
        }
    note = CHECKPOINT_NOTE.format(**hp)
    return ProbeResult(rows=[*rows, fit], curves=curves, notes=[note, hardware_note(device)])


# ---- gradient accumulation ------------------------------------------------------------------------------------


def _accumulate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int) -> None:
    """k equal micro-batches, each loss divided by k: the summed gradients are the mean over the k·b batch."""
    for p in model.parameters():
        p.grad = None
    for xc, yc in zip(x.chunk(k), y.chunk(k), strict=True):
        (nn.functional.cross_entropy(model(xc), yc) / k).backward()


def _accumulate_and_step(model, opt, x, y, k: int) -> None:
    _accumulate(model, x, y, k)
    opt.step()


def _train_params(ctx, hp, data, k: int) -> list[torch.Tensor]:
    """Parameters after ``train_steps`` float64 SGD steps on the same sequence of effective batches."""
    device, eff = torch.device("cpu"), int(hp["effective_batch"])
    model = study_model(ctx, data, torch.float64, device).eval()
    opt = torch.optim.SGD(model.parameters(), lr=float(hp["lr"]))
    g = torch.Generator().manual_seed(ctx.seed)
    x_all, y_all = data.x_train.double(), data.y_train
    for _ in range(int(hp["train_steps"])):
        idx = torch.randint(len(x_all), (eff,), generator=g)
        _accumulate(model, x_all[idx], y_all[idx], k)
        opt.step()
    return [p.detach() for p in model.parameters()]


@PROBES.register(
    "grad_accumulation",
    description="k micro-batches (loss/k) vs one batch of the same effective size: gradients, memory, time",
    defaults={
        "effective_batch": 512,
        "micro_batches": [1, 2, 4, 8],
        "repeats": 10,
        "warmup": 2,
        "dtype": "float32",
        "train_steps": 50,
        "lr": 0.05,
        "threads": 1,  # see gradient_common.threaded; 0 = torch's default
    },
    topic=FAMILY,
)
@threaded
def grad_accumulation(ctx: ProbeContext, **hp) -> ProbeResult:
    device, dtype, eff = probe_device(ctx), DTYPES[hp["dtype"]], int(hp["effective_batch"])
    x, y, data = sample_batch(ctx, eff, dtype, device)
    model = study_model(ctx, data, dtype, device).eval()  # eval: dropout would differ between splits
    opt = torch.optim.SGD(model.parameters(), lr=float(hp["lr"]))
    # k=1 is the reference every ratio and difference is taken against; k must split the batch evenly.
    ks = sorted({1, *(int(k) for k in hp["micro_batches"] if eff % int(k) == 0)})
    grads = {}
    for k in ks:  # all gradients first, at the initial parameters (the timed steps below update them)
        _accumulate(model, x, y, k)
        grads[k] = _grads(model)
    params = {k: _train_params(ctx, hp, data, k) for k in ks}
    steps = {k: functools.partial(_accumulate_and_step, model, opt, x, y, k) for k in ks}
    times = median_seconds(steps, device, hp["repeats"], hp["warmup"])
    rows = []
    for k in ks:
        peak_mb, act_mb = _step_memory(steps[k], device, [model, opt, x, y])
        rows.append(
            {
                "row": f"k={k} b={eff // k}",
                "peak_mb": peak_mb,
                "act_mb": act_mb,
                "step_ms": 1e3 * times[k],
                "rel_grad_diff": rel_diff(grads[k], grads[1]),
                "rel_param_diff_fp64": rel_diff(params[k], params[1]),
            }
        )
    for r in rows:
        r["act_ratio_vs_k1"] = r["act_mb"] / rows[0]["act_mb"]
        r["time_ratio_vs_k1"] = r["step_ms"] / rows[0]["step_ms"]
    note = (
        f"Study model on {eff} training examples split into k equal micro-batches, each loss divided by k, one SGD "
        f"step; compared with the same {eff} examples as one batch (k=1). rel_grad_diff = max|g_k − g_1| / "
        f"max|g_1| in {hp['dtype']} at the initial parameters; rel_param_diff_fp64: the same after "
        f"{hp['train_steps']} float64 SGD steps (lr {hp['lr']}). peak_mb / act_mb as in training/memory.py "
        f"(act_mb leaves out parameters, gradients, optimizer state); *_ratio_vs_k1 = value / value at k=1. "
        f"The model has no BatchNorm (whose batch statistics would make micro-batches differ)."
    )
    return ProbeResult(rows=rows, notes=[note, hardware_note(device)])
