"""Helpers shared by the gradient-computation probes (gradient_*.py): device and hardware notes, interleaved
timing, thread control, relative differences, the study's batch and model. Their plots and verdicts are
report code (report/probes/gradients.py)."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from techbench.probes import ProbeContext, ProbeResult
from techbench.workloads import build_model, load_dataset

FAMILY = "gradient_computation"
DTYPES = {"float32": torch.float32, "float64": torch.float64}


# ---- helpers shared by the gradient-computation probes -------------------------------------------------------


def probe_device(ctx: ProbeContext) -> torch.device:
    """CUDA when the study's hardware asks for a GPU and one is present, else CPU."""
    wants_gpu = ctx.hardware.get("accelerator", "cpu") in ("auto", "gpu", "cuda")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


def hardware_note(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    note = f"Measured on {device.type}: torch {torch.__version__}, {torch.get_num_threads()} CPU threads, CPU {cpu}"
    if device.type == "cuda":
        note += f", GPU {torch.cuda.get_device_name(device)}"
    if hasattr(os, "getloadavg"):
        # Other processes on the same cores distort timings (multi-threaded ops wait for a descheduled thread).
        note += f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end of the probe"
    return note + "."


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int = 2):
    """Median wall time of each ``fn()``, name -> seconds. Warm-up calls first (allocator, caches, lazy init);
    the repeats of the variants are interleaved so that a slow spell of the machine (other processes on a
    shared CPU) hits all of them alike instead of biasing their ratio. CUDA kernels are asynchronous, hence
    the synchronisation around each call."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[int]:
    """Run with ``n`` intra-op CPU threads (0 = leave torch's setting); yields the count in effect."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def threaded(fn: Callable[..., ProbeResult]) -> Callable[..., ProbeResult]:
    """Run a probe with ``hp["threads"]`` intra-op CPU threads (0 = torch's default). On a shared CPU a
    multi-threaded small op waits for descheduled threads (60 µs → 1 ms measured here), so timing probes
    default to 1; the hardware note, written inside, reports the count in effect."""

    @functools.wraps(fn)
    def run(ctx: ProbeContext, **hp: Any) -> ProbeResult:
        with num_threads(int(hp.get("threads", 0))):
            return fn(ctx, **hp)

    return run


def rel_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """max|a − b| / max|b| over all entries: relative to the gradient's scale, because an entry-wise relative
    error is dominated by entries that are zero up to rounding."""
    fa = torch.cat([t.detach().flatten().double() for t in a])
    fb = torch.cat([t.detach().flatten().double() for t in b])
    return float((fa - fb).abs().max() / fb.abs().max().clamp_min(1e-300))


def sample_batch(ctx: ProbeContext, size: int, dtype: torch.dtype, device: torch.device):
    """``size`` training examples drawn with the run seed (with replacement only if the split is smaller)."""
    data = load_dataset(ctx.data)
    g = torch.Generator().manual_seed(ctx.seed)
    n = len(data.x_train)
    idx = torch.randperm(n, generator=g)[:size] if size <= n else torch.randint(n, (size,), generator=g)
    return data.x_train[idx].to(device, dtype), data.y_train[idx].to(device), data


def study_model(ctx: ProbeContext, data, dtype: torch.dtype, device: torch.device, spec: dict | None = None):
    """The study's model (or the model ``spec``), initialised from the run seed."""
    torch.manual_seed(ctx.seed)
    return build_model(spec or ctx.model, data.input_shape, data.num_classes).to(device, dtype)


def mlp_spec(ctx: ProbeContext, hidden: list[int], activation: str | None = None) -> dict[str, Any]:
    """An MLP spec for probes that need one whatever the study's model: its activation if it is an MLP."""
    act = activation or (ctx.model.get("activation", "relu") if ctx.model.get("name") == "mlp" else "relu")
    return {"name": "mlp", "hidden": [int(h) for h in hidden], "activation": act, "dropout": 0.0}


def log_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares exponent a of y ∝ x^a."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0]) if len(set(xs)) > 1 else math.nan
