"""Gradient computation probes (the chapter's "Gradient Calculation Optimization"), part 1: the per-example loop
against one batched (vectorized) gradient.

The other parts: gradient_autodiff.py (forward vs reverse mode, gradient check against finite differences),
gradient_cost.py (backward vs forward cost, finite differences), gradient_memory.py (gradient checkpointing and
accumulation) and gradient_precision.py (mixed precision); shared helpers in gradient_common.py.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from techbench.probes import PROBES, ProbeContext, ProbeResult
from techbench.probes.gradient_common import (
    DTYPES,
    FAMILY,
    hardware_note,
    median_seconds,
    num_threads,
    probe_device,
    rel_diff,
    sample_batch,
    study_model,
)

# ---- per-example loop vs batched (vectorized) gradient ------------------------------------------------------


def _loop_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """The chapter's ``for i in range(batch_size): gradients[i] = compute_gradient(examples[i])``, averaged."""
    params = [p for p in model.parameters()]
    total = [torch.zeros_like(p) for p in params]
    for i in range(len(x)):
        loss = nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        for acc, g in zip(total, torch.autograd.grad(loss, params), strict=True):
            acc.add_(g)
    return [t / len(x) for t in total]


def _batched_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    loss = nn.functional.cross_entropy(model(x), y)
    return list(torch.autograd.grad(loss, list(model.parameters())))


def _vmap_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """Per-example gradients in one vectorized call (torch.func), then averaged."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss_one(p, xi, yi):
        return nn.functional.cross_entropy(functional_call(model, p, (xi.unsqueeze(0),)), yi.unsqueeze(0))

    per_example = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)
    return [per_example[k].mean(0) for k in params]


def _vectorization(ctx: ProbeContext, hp: dict[str, Any], names: tuple[str, ...]) -> ProbeResult:
    """Times the loop and the methods in ``names`` on the same batch and model; every key times the loop
    itself, so its speedups are ratios of times measured back to back in one run."""
    device, dtype = probe_device(ctx), DTYPES[hp["dtype"]]
    methods = {"loop": _loop_grads, "batched": _batched_grads, "vmap": _vmap_grads}
    rows = []
    for b in hp["batch_sizes"]:
        x, y, data = sample_batch(ctx, int(b), dtype, device)
        # eval(): dropout off, so one example's loss does not depend on the rest of the batch.
        model = study_model(ctx, data, dtype, device).eval()
        ref = _loop_grads(model, x, y)
        diffs = {name: rel_diff(methods[name](model, x, y), ref) for name in ("batched", *names)}
        for threads in hp["threads"]:
            with num_threads(int(threads)) as t:
                fns = {name: functools.partial(methods[name], model, x, y) for name in ("loop", *names)}
                times = median_seconds(fns, device, hp["repeats"], hp["warmup"])
            for name in names:
                row = {
                    "row": f"{name} B={b} threads={t}",
                    "seconds": times[name],
                    "us_per_example": 1e6 * times[name] / b,
                }
                if name == "loop":
                    row["rel_grad_diff_batched_vs_loop"] = diffs["batched"]
                else:
                    row.update(speedup_vs_loop=times["loop"] / times[name], rel_grad_diff=diffs[name])
                rows.append(row)
    return ProbeResult(rows=rows, notes=[VECTORIZATION_NOTE, hardware_note(device)])


VECTORIZATION_DEFAULTS = {"batch_sizes": [32, 256], "threads": [1, 0], "repeats": 10, "warmup": 2, "dtype": "float32"}
VECTORIZATION_NOTE = (
    "Gradient of the mean cross-entropy over B examples of the study's model (eval mode): a Python loop of "
    "per-example forward/backward passes, one batched forward/backward, and torch.func vmap(grad) per-example "
    "gradients averaged. Times are medians over repeats after warm-up; speedup_vs_loop = loop time / this time "
    "(> 1: faster than the loop), both timed in the same run; rel_grad_diff = max|g − g_loop| / max|g_loop|. "
    "threads=0 in the hp means torch's default."
)


@PROBES.register(
    "per_example_loop",
    description="gradient of the batch loss by a Python loop over examples (the chapter's non-vectorized code)",
    defaults=VECTORIZATION_DEFAULTS,
    topic=FAMILY,
)
def per_example_loop(ctx: ProbeContext, **hp) -> ProbeResult:
    return _vectorization(ctx, hp, ("loop",))


@PROBES.register(
    "vectorized",
    description="one batched backward pass and vmap(grad) per-example gradients vs the per-example loop",
    defaults=VECTORIZATION_DEFAULTS,
    topic=FAMILY,
)
def vectorized(ctx: ProbeContext, **hp) -> ProbeResult:
    return _vectorization(ctx, hp, ("batched", "vmap"))
