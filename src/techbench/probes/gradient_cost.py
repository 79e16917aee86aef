"""Gradient computation probes, part 5: what backpropagation saves. One backward pass costs a small multiple of
a forward pass whatever the number of parameters P, while finite differences need two forward passes per
parameter (the chapter: computing gradients "for each parameter separately ... would require multiple forward
passes")."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn

from techbench.probes import PROBES, ProbeContext, ProbeResult
from techbench.probes.gradient_common import (
    FAMILY,
    hardware_note,
    log_slope,
    mlp_spec,
    probe_device,
    sample_batch,
    study_model,
    sync,
    threaded,
)


def _timed(fn, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def _forward_backward_seconds(model: nn.Module, x, y, device, repeats: int, warmup: int) -> tuple[float, float]:
    """Median forward (loss) time and median backward time, the backward timed alone on a fresh graph."""
    fwd, bwd = [], []
    for i in range(warmup + repeats):
        model.zero_grad(set_to_none=True)
        sync(device)
        t0 = time.perf_counter()
        loss = nn.functional.cross_entropy(model(x), y)
        sync(device)
        t1 = time.perf_counter()
        loss.backward()
        sync(device)
        if i >= warmup:
            fwd.append(t1 - t0)
            bwd.append(time.perf_counter() - t1)
    return statistics.median(fwd), statistics.median(bwd)


def _finite_difference_seconds(model: nn.Module, x, y, device, h: float = 1e-3) -> float:
    """Wall time of a full central-difference gradient: two forward passes per parameter."""

    def run():
        with torch.no_grad():
            for p in model.parameters():
                flat = p.view(-1)
                for j in range(flat.numel()):
                    orig = flat[j].clone()
                    flat[j] = orig + h
                    nn.functional.cross_entropy(model(x), y)
                    flat[j] = orig - h
                    nn.functional.cross_entropy(model(x), y)
                    flat[j] = orig

    return _timed(run, device)


@PROBES.register(
    "backprop_cost",
    description="backward vs forward time across model sizes P, and the ~P forward passes finite differences need",
    # P from ~500 to ~1.1e6; finite differences on the three smallest (P ≤ 3000: ~9k forward passes).
    defaults={
        "widths": [8, 16, 32, 64, 256, 1024],
        "batch_size": 256,
        "repeats": 20,
        "warmup": 3,
        "fd_max_params": 3000,
        "threads": 1,  # see gradient_common.threaded; 0 = torch's default
    },
    topic=FAMILY,
)
@threaded
def backprop_cost(ctx: ProbeContext, **hp) -> ProbeResult:
    device = probe_device(ctx)
    x, y, data = sample_batch(ctx, int(hp["batch_size"]), torch.float32, device)
    rows, fd_p, fd_t = [], [], []
    for w in hp["widths"]:
        model = study_model(ctx, data, torch.float32, device, mlp_spec(ctx, [w, w]))
        n_params = sum(p.numel() for p in model.parameters())
        fwd, bwd = _forward_backward_seconds(model, x, y, device, int(hp["repeats"]), int(hp["warmup"]))
        row: dict[str, Any] = {
            "row": f"width {w}",
            "params": float(n_params),
            "forward_ms": 1e3 * fwd,
            "backward_ms": 1e3 * bwd,
            "backward_over_forward": bwd / fwd,
        }
        if n_params <= int(hp["fd_max_params"]):
            fd = _finite_difference_seconds(model, x, y, device)
            row.update(fd_ms=1e3 * fd, fd_over_backward=fd / bwd, fd_forwards_per_param=fd / fwd / n_params)
            fd_p.append(n_params)
            fd_t.append(fd)
        rows.append(row)
    scaling = {"row": "scaling in P"}
    if len(fd_p) > 1:
        scaling["fd_time_exponent"] = log_slope(fd_p, fd_t)
    ps = [r["params"] for r in rows]
    scaling["backward_time_exponent"] = log_slope(ps, [r["backward_ms"] for r in rows])
    note = (
        f"Two-hidden-layer MLPs of the widths listed on the study's inputs, batch {hp['batch_size']}, mean "
        f"cross-entropy. forward_ms / backward_ms: medians of {hp['repeats']} repeats, the backward timed alone "
        f"on a fresh graph; backward_over_forward = backward / forward time. fd_ms: one full central-difference "
        f"gradient (two forwards per parameter) for models with P ≤ {hp['fd_max_params']}; fd_forwards_per_param "
        f"= fd time / forward time / P (2 expected); *_exponent: log-log slope of the time against P."
    )
    return ProbeResult(rows=[*rows, scaling], notes=[note, hardware_note(device)])
