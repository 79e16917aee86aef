"""Update rules for a stack of K models trained at once, each member with its own hyperparameters (stacked seeds and
stacked Optuna trials): the arithmetic of the torch.optim / timm optimizer an entry of optimizers.py builds,
written over one (K, P) tensor that holds every member's parameters as a row, with every hyperparameter a (K, 1)
column broadcast over its member's row (float64, as the optimizers' Python-float hyperparameters; the coefficients
are cast to the parameters' dtype before they touch a tensor). No library offers per-member hyperparameters over a
stack, so the rules are written here, in the order of operations of the optimizer each mirrors;
tests/test_stacked_updates.py holds each rule to that optimizer, member by member.

A rule is ``rule(p, g, state, hp, t, segments)``: it updates the rows of ``p`` in place from the gradient ``g`` at
update ``t`` (1-based), keeping its moments in ``state``. ``segments`` are the (start, end, shape) column spans of
the model's parameter tensors in a row, for the rules that work per tensor (LAMB and LARS trust ratios, gradient
centralization). An optimizer entry names its rule with ``stacked=``; an entry without one does not stack.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Rule = Callable[..., None]
Segments = list[tuple[int, int, tuple[int, ...]]]


def _c(x, like: torch.Tensor):
    """A float64 coefficient column in the dtype of the tensor it scales (a Python float, shared by every member,
    stays one: the in-place scalar ops below then compute exactly as the optimizer does)."""
    return x if isinstance(x, float) else x.to(like.dtype)


def _sqrt(x):
    return math.sqrt(x) if isinstance(x, float) else x.sqrt()


def _state(state: dict, key: str, like: torch.Tensor) -> torch.Tensor:
    if key not in state:
        state[key] = torch.zeros_like(like)
    return state[key]


def _add_square(v: torch.Tensor, g: torch.Tensor, weight) -> None:
    """v += weight · g², weight a float or a column."""
    if isinstance(weight, float):
        v.addcmul_(g, g, value=weight)
    else:
        v.addcmul_(g, g * _c(weight, g))


def sgd(p, g, state, hp, t, segments) -> None:
    p.add_(g * _c(-hp["lr"], p))


def _heavy_ball(g, state, hp, nesterov: bool):
    """torch.optim.SGD's momentum buffer: b ← g at the first update, then b ← μb + g; Nesterov steps g + μb."""
    buf = state.get("momentum_buffer")
    if buf is None:
        buf = state["momentum_buffer"] = g.clone()
    else:
        buf.mul_(_c(hp["momentum"], g)).add_(g)
    return g + buf * _c(hp["momentum"], g) if nesterov else buf


def momentum(p, g, state, hp, t, segments) -> None:
    p.add_(_heavy_ball(g, state, hp, nesterov=False) * _c(-hp["lr"], p))


def nesterov(p, g, state, hp, t, segments) -> None:
    p.add_(_heavy_ball(g, state, hp, nesterov=True) * _c(-hp["lr"], p))


def adagrad(p, g, state, hp, t, segments) -> None:
    total = _state(state, "sum", p)
    total.addcmul_(g, g)
    p.add_(g / total.sqrt().add_(_c(hp["eps"], p)) * _c(-hp["lr"], p))


def rmsprop(p, g, state, hp, t, segments) -> None:
    avg = _state(state, "square_avg", p)
    avg.mul_(_c(hp["beta"], p))
    _add_square(avg, g, 1 - hp["beta"])
    p.add_(g / avg.sqrt().add_(_c(hp["eps"], p)) * _c(-hp["lr"], p))


def _moments(g, state, hp):
    """Adam's first and second moments: m ← lerp(m, g, 1 − β1), v ← β2 v + (1 − β2) g²."""
    m, v = _state(state, "exp_avg", g), _state(state, "exp_avg_sq", g)
    m.lerp_(g, _c(1 - hp["beta1"], g))
    v.mul_(_c(hp["beta2"], g))
    _add_square(v, g, 1 - hp["beta2"])
    return m, v


def adam(p, g, state, hp, t, segments) -> None:
    m, v = _moments(g, state, hp)
    correction1, correction2 = 1 - hp["beta1"] ** t, 1 - hp["beta2"] ** t
    denom = v.sqrt().div_(_c(_sqrt(correction2), p)).add_(_c(hp["eps"], p))
    p.add_(torch.div(m, denom).mul_(_c(-hp["lr"] / correction1, p)))


def adamw(p, g, state, hp, t, segments) -> None:
    p.mul_(_c(1 - hp["lr"] * hp["weight_decay"], p))  # decoupled decay first, as torch.optim.AdamW
    adam(p, g, state, hp, t, segments)


def radam(p, g, state, hp, t, segments) -> None:
    m, v = _moments(g, state, hp)
    beta2 = hp["beta2"]
    correction1, correction2 = 1 - hp["beta1"] ** t, 1 - beta2**t
    corrected = m / _c(correction1, p)
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * beta2**t / correction2
    # The rectified adaptive step where the variance of v̂ is tractable (ρ_t > 5), the plain m̂ step before.
    ratio = (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
    rect = math.sqrt(max(ratio, 0.0)) if isinstance(ratio, float) else ratio.clamp(min=0).sqrt()
    lr = _c(hp["lr"], p)
    plain = corrected * lr
    if isinstance(rho_t, float) and rho_t <= 5.0:
        p.sub_(plain)
        return
    adaptive = plain * (_c(_sqrt(correction2), p) / v.sqrt().add_(_c(hp["eps"], p))) * _c(rect, p)
    p.sub_(adaptive if isinstance(rho_t, float) else torch.where(rho_t > 5.0, adaptive, plain))


def _per_tensor_norms(x: torch.Tensor, segments: Segments) -> torch.Tensor:
    """(K, P) -> (K, P): each entry replaced by the L2 norm of its member's tensor (its segment of the row)."""
    norms = torch.stack([x[:, a:b].norm(dim=1) for a, b, _ in segments], 1)
    sizes = torch.tensor([b - a for a, b, _ in segments])
    return norms.repeat_interleave(sizes, dim=1)


def _ratio_or_one(ratio, w_norm, g_norm):
    return torch.where(w_norm > 0, torch.where(g_norm > 0, ratio, 1.0), 1.0)


def lamb(p, g, state, hp, t, segments) -> None:
    """timm's Lamb (grad averaging, bias correction, always_adapt, no clipping): u = m̂/(√v̂ + ε) + λθ, θ ← θ −
    η·(‖θ‖/‖u‖)·u, the trust ratio per member and tensor."""
    m, v = _moments(g, state, hp)
    correction1, correction2 = 1 - hp["beta1"] ** t, 1 - hp["beta2"] ** t
    denom = v.sqrt().div_(_c(_sqrt(correction2), p)).add_(_c(hp["eps"], p))
    update = (m / _c(correction1, p)).div_(denom).add_(p * _c(hp["weight_decay"], p))
    w_norm, u_norm = _per_tensor_norms(p, segments), _per_tensor_norms(update, segments)
    update.mul_(_ratio_or_one(w_norm / u_norm, w_norm, u_norm))
    p.add_(update * _c(-hp["lr"], p))


LARS_EPS = 1e-8  # timm Lars's default; the registry entry does not set it


def lars(p, g, state, hp, t, segments) -> None:
    """timm's Lars (always_adapt, no LARC clipping, no Nesterov): λ = η_tc‖θ‖/(‖g‖ + β‖θ‖ + ε) per member and
    tensor, b ← μb + λ(g + βθ) (b = λ(g + βθ) at the first update), θ ← θ − ηb."""
    w_norm, g_norm = _per_tensor_norms(p, segments), _per_tensor_norms(g, segments)
    decay = _c(hp["weight_decay"], p)
    ratio = _c(hp["trust_coeff"], p) * w_norm / (g_norm + w_norm * decay + LARS_EPS)
    scaled = (g + p * decay) * _ratio_or_one(ratio, w_norm, g_norm)
    buf = state.get("momentum_buffer")
    if buf is None:
        buf = state["momentum_buffer"] = scaled.clone()
    else:
        buf.mul_(_c(hp["momentum"], p)).add_(scaled)
    p.add_(buf * _c(-hp["lr"], p))


def lookahead(p, g, state, hp, t, segments) -> None:
    """PaperLookahead(Adam): Adam's fast step, then every k-th update φ ← φ + α(θ − φ), θ ← φ (φ_0 = θ_0), with k
    and α per member."""
    slow = state.get("slow")
    if slow is None:
        slow = state["slow"] = p.clone()
    adam(p, g, state, hp, t, segments)
    k = hp["k"]
    if isinstance(k, float):
        if t % k == 0:
            slow.add_((p - slow) * _c(hp["alpha"], p))
            p.copy_(slow)
        return
    sync = torch.remainder(torch.full_like(k, t), k) == 0  # (K, 1)
    if bool(sync.any()):
        synced = slow + (p - slow) * _c(hp["alpha"], p)
        slow.copy_(torch.where(sync, synced, slow))
        p.copy_(torch.where(sync, slow, p))


def centralized(rule: Rule) -> Rule:
    """``rule`` with gradient centralization first: each member's weight rows (dims after the first of a tensor
    with more than one) made zero-mean, as gradient_centralization.centralize_ does for one model."""

    def step(p, g, state, hp, t, segments) -> None:
        k = g.shape[0]
        for a, b, shape in segments:
            if len(shape) > 1:
                rows = g[:, a:b].view(k, shape[0], -1)
                rows.sub_(rows.mean(dim=2, keepdim=True))
        rule(p, g, state, hp, t, segments)

    return step
