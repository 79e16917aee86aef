"""Gradient computation probes, part 2: forward- vs reverse-mode automatic differentiation, and the chapter's
backpropagation equations checked against autograd and central finite differences."""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import nn
from torch.func import jacfwd, jacrev

from techbench.probes import PROBES, ProbeContext, ProbeResult
from techbench.probes.gradient_common import (
    DTYPES,
    FAMILY,
    hardware_note,
    median_seconds,
    mlp_spec,
    probe_device,
    rel_diff,
    sample_batch,
    study_model,
    threaded,
)

# ---- forward vs reverse mode ----------------------------------------------------------------------------------


def _test_functions(hp: dict[str, Any], seed: int, dtype: torch.dtype, device: torch.device):
    """(a) R^n → R and (b) R → R^m, both two tanh layers of width ``hidden`` with random weights."""
    g = torch.Generator().manual_seed(seed)
    n, m, h = int(hp["n_inputs"]), int(hp["n_outputs"]), int(hp["hidden"])

    def rand(*shape, fan_in):
        return (torch.randn(*shape, generator=g) / math.sqrt(fan_in)).to(device, dtype)

    w1, w2, w3 = rand(h, n, fan_in=n), rand(h, h, fan_in=h), rand(h, fan_in=h)
    u, c, v2, v3 = rand(h, fan_in=1), rand(h, fan_in=1), rand(h, h, fan_in=h), rand(m, h, fan_in=h)

    def many_to_one(x):
        return w3 @ torch.tanh(w2 @ torch.tanh(w1 @ x))

    def one_to_many(t):
        return v3 @ torch.tanh(v2 @ torch.tanh(u * t + c))

    x0, t0 = rand(n, fan_in=1), rand(1, fan_in=1)
    return {f"R^n→R n={n}": (many_to_one, x0), f"R→R^m m={m}": (one_to_many, t0)}


def _ad_modes(ctx: ProbeContext, hp: dict[str, Any], mode: str) -> ProbeResult:
    """Full Jacobians with jacfwd (one forward-mode JVP per input direction, vmapped) and jacrev (one VJP per
    output, vmapped); both are timed in every run so the ratio compares times measured back to back."""
    device, dtype = probe_device(ctx), DTYPES[hp["dtype"]]
    other = "reverse" if mode == "forward" else "forward"
    rows = []
    for label, (f, x) in _test_functions(hp, ctx.seed, dtype, device).items():
        jac = {"forward": jacfwd(f), "reverse": jacrev(f)}
        secs = median_seconds({k: functools.partial(j, x) for k, j in jac.items()}, device, hp["repeats"], hp["warmup"])
        rows.append(
            {
                "row": label,
                "seconds": secs[mode],
                f"time_ratio_vs_{other}": secs[mode] / secs[other],
                "jacobian_rel_diff": rel_diff([jac["forward"](x)], [jac["reverse"](x)]),
            }
        )
    note = (
        f"Full Jacobian of (a) a scalar function of n inputs and (b) an m-output function of one input, by "
        f"torch.func.jacfwd (forward mode: one JVP per input) and jacrev (reverse mode: one VJP per output). "
        f"time_ratio_vs_{other} = {mode} time / {other} time (< 1: {mode} mode is faster); jacobian_rel_diff = "
        f"max|J_fwd − J_rev| / max|J_rev|."
    )
    return ProbeResult(rows=rows, notes=[note, hardware_note(device)])


MODE_DEFAULTS = {
    "n_inputs": 1000,
    "n_outputs": 1000,
    "hidden": 256,
    "repeats": 10,
    "warmup": 2,
    "dtype": "float32",
    "threads": 1,  # see gradient_common.threaded; 0 = torch's default
}


@PROBES.register(
    "forward_mode",
    description="full Jacobian by forward-mode AD (jacfwd) of R^n→R and R→R^m, timed against reverse mode",
    defaults=MODE_DEFAULTS,
    topic=FAMILY,
)
@threaded
def forward_mode(ctx: ProbeContext, **hp) -> ProbeResult:
    return _ad_modes(ctx, hp, "forward")


@PROBES.register(
    "reverse_mode",
    description="full Jacobian by reverse-mode AD (jacrev, i.e. backpropagation) of R^n→R and R→R^m",
    defaults=MODE_DEFAULTS,
    topic=FAMILY,
)
@threaded
def reverse_mode(ctx: ProbeContext, **hp) -> ProbeResult:
    return _ad_modes(ctx, hp, "reverse")


# ---- the chapter's backpropagation vs autograd vs finite differences -----------------------------------------

# g'(z) written with the activation a = g(z) where the chapter's sigmoid/tanh derivatives are usually stated.
DERIVATIVES = {
    "tanh": lambda z, a: 1 - a * a,
    "sigmoid": lambda z, a: a * (1 - a),
    "relu": lambda z, a: (z > 0).to(z.dtype),
}


def manual_backprop(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, activation: str):
    """Gradients of the mean softmax cross-entropy of an MLP by the chapter's equations, batch as rows:
    δ(L) = softmax(z(L)) − y,  δ(l) = (δ(l+1) W(l+1)) ⊙ g'(z(l)),  ∇W(l) = δ(l)ᵀ a(l−1),  ∇b(l) = Σ δ(l).
    Returns (gradients in model.parameters() order, δ(L))."""
    linears = [m for m in model if isinstance(m, nn.Linear)]
    g = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}[activation]
    with torch.no_grad():
        acts, zs = [x.flatten(1)], []
        for i, lin in enumerate(linears):
            zs.append(acts[-1] @ lin.weight.T + lin.bias)
            acts.append(g(zs[-1]) if i < len(linears) - 1 else zs[-1])
        # 1/B because the loss is the batch mean: each example's δ enters the average once.
        delta_out = (torch.softmax(zs[-1], dim=1) - nn.functional.one_hot(y, zs[-1].shape[1])) / len(x)
        delta, grads = delta_out, []
        for layer in reversed(range(len(linears))):
            grads = [delta.T @ acts[layer], delta.sum(0), *grads]
            if layer > 0:
                delta = (delta @ linears[layer].weight) * DERIVATIVES[activation](zs[layer - 1], acts[layer])
    return grads, delta_out


def _finite_differences(model: nn.Module, loss_fn, coords: list[tuple[int, int]], h: float) -> torch.Tensor:
    """Central differences (J(θ + h e_i) − J(θ − h e_i)) / 2h, one coordinate at a time."""
    params = list(model.parameters())
    out = []
    with torch.no_grad():
        for pi, j in coords:
            flat = params[pi].view(-1)
            orig = flat[j].item()
            flat[j] = orig + h
            plus = loss_fn().item()
            flat[j] = orig - h
            minus = loss_fn().item()
            flat[j] = orig
            out.append((plus - minus) / (2 * h))
    return torch.tensor(out, dtype=torch.float64)


def _sample_coords(model: nn.Module, count: int, seed: int) -> list[tuple[int, int]]:
    sizes = [p.numel() for p in model.parameters()]
    total = sum(sizes)
    flat = (
        torch.arange(total)
        if count <= 0 or count >= total
        else torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:count]
    )
    offsets = torch.tensor([0, *sizes]).cumsum(0)
    out = []
    for i in sorted(flat.tolist()):
        pi = int(torch.searchsorted(offsets, torch.tensor(i), right=True)) - 1
        out.append((pi, i - int(offsets[pi])))
    return out


def _check_one(ctx: ProbeContext, hp: dict[str, Any], activation: str) -> list[dict[str, Any]]:
    device, dtype = torch.device("cpu"), torch.float64  # rounding error must stay far below the FD error
    x, y, data = sample_batch(ctx, int(hp["examples"]), dtype, device)
    hidden = ctx.model["hidden"] if ctx.model.get("name") == "mlp" else hp["hidden_if_not_mlp"]
    model = study_model(ctx, data, dtype, device, mlp_spec(ctx, hidden, activation))
    params = list(model.parameters())

    def loss_fn():
        return nn.functional.cross_entropy(model(x), y)

    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y)
    auto = torch.autograd.grad(loss, [*params, logits])
    manual, delta_out = manual_backprop(model, x, y, activation)
    rows = [
        {
            "row": activation,
            "manual_vs_autograd": rel_diff(manual, list(auto[:-1])),
            "delta_out_vs_autograd": rel_diff([delta_out], [auto[-1]]),
        }
    ]
    coords = _sample_coords(model, int(hp["coords"]), ctx.seed)
    ad = torch.stack([auto[pi].view(-1)[j] for pi, j in coords])
    for h in hp["h"]:
        fd = _finite_differences(model, loss_fn, coords, float(h))
        err = (ad - fd).abs()
        floor = float(hp["rel_floor"]) * ad.abs().max()
        rel = err / torch.maximum(torch.maximum(ad.abs(), fd.abs()), floor).clamp_min(1e-300)
        rows.append(
            {
                "row": f"{activation} h={float(h):g}",
                "fd_max_rel_err": float(rel.max()),
                "fd_mean_rel_err": float(rel.mean()),
                "fd_norm_rel_err": float(err.norm() / ad.norm()),
                "fd_max_abs_err": float(err.max()),
                # Rounding in J(θ ± h) alone gives an FD error of about eps·|J|/h: entries of |g| near it
                # cannot be checked to a small relative error whatever backprop does.
                "fd_roundoff_level": torch.finfo(dtype).eps * abs(loss.item()) / float(h),
                "min_abs_grad": float(ad.abs().min()),
            }
        )
    return rows


GRADCHECK_NOTE = (
    "float64 MLP (the study's hidden sizes) on {examples} training examples, mean softmax cross-entropy. "
    "Rows '<activation> h=…': autograd vs central differences with step h on {coords} random parameter "
    "coordinates (0 = all); rel err = |g_ad − g_fd| / max(|g_ad|, |g_fd|, {rel_floor}·max|g_ad|); "
    "fd_norm_rel_err = ‖g_ad − g_fd‖ / ‖g_ad‖; fd_roundoff_level = eps·|J|/h, the FD error rounding alone "
    "causes. Rows '<activation>': manual_vs_autograd = the chapter's δ recursion coded by hand vs autograd, "
    "max|Δ| / max|g|; delta_out_vs_autograd = δ(L) = softmax(z) − y (over B) vs autograd's ∂J/∂z."
)


@PROBES.register(
    "gradient_check",
    description="backprop (autograd and the chapter's equations by hand) vs central finite differences",
    defaults={
        "activations": ["tanh", "sigmoid", "relu"],
        "examples": 32,
        "coords": 200,
        "h": [1e-6, 1e-4],  # the claim's step, and one near the float64 optimum (eps^(1/3) scale)
        "rel_floor": 0.0,
        "hidden_if_not_mlp": [32, 32],
        # Thousands of tiny forward passes gain nothing from more threads (see gradient_common.threaded).
        "threads": 1,
    },
    topic=FAMILY,
)
@threaded
def gradient_check(ctx: ProbeContext, **hp) -> ProbeResult:
    rows = [row for act in hp["activations"] for row in _check_one(ctx, hp, act)]
    return ProbeResult(rows=rows, notes=[GRADCHECK_NOTE.format(**hp), hardware_note(torch.device("cpu"))])
