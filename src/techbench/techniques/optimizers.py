"""Optimizers, with the chapter's default hyperparameters ("Momentum and Advanced Optimizers").

Each entry is a factory ``(model, **hp) -> torch.optim.Optimizer`` over torch.optim, timm.optim or newton.py; its
defaults are the values the chapter (or, where it gives none, the method's paper) gives and its search space is what
``techbench tune`` explores.

Notation bridge to the chapter: torch's SGD momentum keeps b_t = γ b_{t-1} + g_t and steps θ -= η b_t, which
is the chapter's v_t = γ v_{t-1} + η g_t, θ -= v_t with v_t = η b_t (identical for a constant η).
torch puts ε outside the square root (η g / (√G + ε)) where the chapter writes η g / √(G + ε);
with ε = 1e-8 the two agree to float precision once G ≫ ε².

Flags (OptimizerInfo) the training loop reads:
  stacked=rule         the entry's update written over a stack of K models with per-member hyperparameters
                       (stacked_updates.py): the seeds of a run, or several Optuna trials, train as one stack and
                       each member follows the trajectory it would follow alone. None: the entry does not stack.
  full_batch=True      train on the whole training set as one batch (one optimizer step per epoch): the method
                       assumes a deterministic objective (L-BFGS curvature pairs and line search, Newton's Hessian).
  closure="backward"   step(closure) with a closure that zeroes the gradients, recomputes the loss, backpropagates
                       and returns the loss; step may call it several times (Lightning's automatic optimization).
  closure="loss_graph" step(closure) with a closure that returns the loss WITH its graph, not backpropagated
                       (Lightning manual optimization); step differentiates it itself.
  max_params=N         build_optimizer raises ValueError for a model with more than N trainable parameters.
  modifier="gc", base  ``<base>+gc``: the base optimizer with gradient centralization (gradient_centralization.py).
Every first-order entry (no closure) gets its ``<name>+gc`` variant when it is registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from timm.optim import Lamb, Lars
from torch import nn

from techbench.registry import Info, Registry, build
from techbench.techniques import stacked_updates as rules
from techbench.techniques.family import Family
from techbench.techniques.gradient_centralization import add_gc_variant
from techbench.techniques.lookahead import PaperLookahead
from techbench.techniques.newton import Newton


@dataclass(frozen=True)
class OptimizerInfo(Info):
    stacked: Callable[..., None] | None = None
    closure: str | None = None  # None, "backward" or "loss_graph"
    full_batch: bool = False
    max_params: int | None = None
    modifier: str | None = None
    base: str | None = None

    def __post_init__(self):
        if self.closure not in (None, "backward", "loss_graph"):
            raise ValueError(f"optimizer closure {self.closure!r}; allowed: None, backward, loss_graph")


OPTIMIZERS = Registry("optimizer", OptimizerInfo)
OPTIMIZERS.on_register.append(lambda entry: add_gc_variant(OPTIMIZERS, entry))


def build_optimizer(spec: dict, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer ``spec`` over ``model``; ValueError for a model larger than the entry's ``max_params``."""
    limit = OPTIMIZERS.get(spec["name"]).info.max_params
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if limit is not None and n > limit:
        raise ValueError(
            f"{spec['name']}: the model has {n} trainable parameters, more than max_params={limit} "
            f"(an exact Hessian is {n}×{n} and its solve O(P³)); use lbfgs or a smaller model"
        )
    return build(OPTIMIZERS, spec, model)


class OptimizerFamily(Family):
    def build(self, spec: dict[str, Any], model: nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(spec, model)

    def unstackable(self, spec: dict[str, Any], config: dict[str, Any]) -> str | None:
        return None if self.entry(spec).info.stacked else f"optimizer {spec['name']} (no stacked update rule)"


FAMILY = OptimizerFamily(
    "optimizer",
    OPTIMIZERS,
    default={"name": "adam"},
    description="how parameters are updated from gradients (Momentum and Advanced Optimizers)",
)


def lr_around(default: float, decades: int = 2) -> dict[str, Any]:
    """Log-uniform over default × 10^±2: every first-order method searches the same 4 decades around its own."""
    return {"low": default / 10**decades, "high": default * 10**decades, "log": True}


LR = lr_around(0.01)


@OPTIMIZERS.register(
    "sgd",
    description="plain (mini-batch) gradient descent: θ ← θ − η∇J",
    defaults={"lr": 0.01},
    search_space={"lr": LR},
    stacked=rules.sgd,
)
def sgd(model, lr):
    return torch.optim.SGD(model.parameters(), lr=lr)


@OPTIMIZERS.register(
    "momentum",
    description="heavy-ball momentum: v ← γv + η∇J, θ ← θ − v",
    defaults={"lr": 0.01, "momentum": 0.9},
    search_space={"lr": lr_around(0.01), "momentum": {"low": 0.5, "high": 0.99}},
    stacked=rules.momentum,
)
def momentum(model, lr, momentum):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)


@OPTIMIZERS.register(
    "nesterov",
    description="Nesterov accelerated gradient: gradient at the look-ahead point θ − γv",
    defaults={"lr": 0.01, "momentum": 0.9},
    search_space={"lr": lr_around(0.01), "momentum": {"low": 0.5, "high": 0.99}},
    stacked=rules.nesterov,
)
def nesterov(model, lr, momentum):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=True)


@OPTIMIZERS.register(
    "adagrad",
    description="AdaGrad: G ← G + g², θ ← θ − η g / √(G + ε)",
    defaults={"lr": 0.01, "eps": 1e-8},
    search_space={"lr": LR},
    stacked=rules.adagrad,
)
def adagrad(model, lr, eps):
    return torch.optim.Adagrad(model.parameters(), lr=lr, eps=eps)


@OPTIMIZERS.register(
    "rmsprop",
    description="RMSProp: G ← βG + (1−β)g², θ ← θ − η g / √(G + ε)",
    defaults={"lr": 0.001, "beta": 0.9, "eps": 1e-8},
    search_space={"lr": lr_around(0.001)},
    stacked=rules.rmsprop,
)
def rmsprop(model, lr, beta, eps):
    return torch.optim.RMSprop(model.parameters(), lr=lr, alpha=beta, eps=eps)


@OPTIMIZERS.register(
    "adam",
    description="Adam: bias-corrected first and second moments, θ ← θ − η m̂ / (√v̂ + ε)",
    defaults={"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
    search_space={"lr": lr_around(0.001)},
    stacked=rules.adam,
)
def adam(model, lr, beta1, beta2, eps):
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(beta1, beta2), eps=eps)


@OPTIMIZERS.register(
    "adamw",
    description="AdamW: Adam with decoupled weight decay, θ ← θ − η m̂/(√v̂ + ε) − ηλθ",
    defaults={"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
    search_space={
        "lr": lr_around(0.001),
        "weight_decay": {"low": 1e-5, "high": 1e-1, "log": True},
    },
    stacked=rules.adamw,
)
def adamw(model, lr, beta1, beta2, eps, weight_decay):
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)


@OPTIMIZERS.register(
    "radam",
    description="RAdam: Adam whose adaptive step is rectified by r_t while the variance of v̂ is intractable; "
    "for the first steps (torch: while ρ_t ≤ 5, i.e. t ≤ 5 at β2 = 0.999) it steps θ ← θ − η m̂ un-adapted",
    defaults={"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
    search_space={"lr": lr_around(0.001)},
    stacked=rules.radam,
)
def radam(model, lr, beta1, beta2, eps):
    return torch.optim.RAdam(model.parameters(), lr=lr, betas=(beta1, beta2), eps=eps)


def _check_lookahead(hp):
    if hp["k"] < 1:
        raise ValueError(f"k must be >= 1, got {hp['k']}")


@OPTIMIZERS.register(
    "lookahead",
    description="Lookahead(Adam): k fast Adam steps, then slow weights φ ← φ + α(θ − φ) and fast weights θ ← φ",
    defaults={"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "k": 5, "alpha": 0.5},
    search_space={
        "lr": lr_around(0.001),
        "k": {"low": 3, "high": 10},
        "alpha": {"low": 0.3, "high": 0.9},
    },
    check=_check_lookahead,
    stacked=rules.lookahead,
)
def lookahead(model, lr, beta1, beta2, eps, k, alpha):
    inner = torch.optim.Adam(model.parameters(), lr=lr, betas=(beta1, beta2), eps=eps)
    return PaperLookahead(inner, alpha=alpha, k=int(k))


@OPTIMIZERS.register(
    "lamb",
    description="LAMB (timm): Adam direction r = m̂/(√v̂ + ε) plus L2 term u = r + λθ, scaled per tensor by the "
    "trust ratio ‖θ‖/‖u‖ (1 where either norm is 0, no clipping), θ ← θ − η·‖θ‖/‖u‖·u; applied to every "
    "tensor, biases included; timm's global gradient-norm clipping is off",
    defaults={"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-6, "weight_decay": 0.01},
    search_space={
        "lr": lr_around(0.001),
        "weight_decay": {"low": 1e-5, "high": 1e-1, "log": True},
    },
    stacked=rules.lamb,
)
def lamb(model, lr, beta1, beta2, eps, weight_decay):
    # always_adapt: timm skips the trust ratio when weight_decay == 0 (plain Adam then); LAMB always adapts.
    # max_grad_norm=None: timm (like NVIDIA's FusedLAMB) clips the global gradient norm to 1 by default; the
    # paper does not, and the run's own grad_clip setting is the one place clipping should come from.
    hp = {"betas": (beta1, beta2), "eps": eps, "weight_decay": weight_decay}
    return Lamb(model.parameters(), lr=lr, **hp, max_grad_norm=None, always_adapt=True)


def _check_lars(hp):
    if hp["trust_coeff"] <= 0:
        raise ValueError(f"trust_coeff must be > 0, got {hp['trust_coeff']}")


@OPTIMIZERS.register(
    "lars",
    description="LARS (timm): per tensor, local lr λ = η_tc‖θ‖/(‖g‖ + β‖θ‖ + ε) (1 where either norm is 0), "
    "v ← μv + λ(g + βθ), θ ← θ − η v; applied to every tensor, biases included, no LARC clipping",
    defaults={"lr": 1.0, "momentum": 0.9, "trust_coeff": 0.001, "weight_decay": 5e-4},
    search_space={"lr": lr_around(1.0)},
    check=_check_lars,
    stacked=rules.lars,
)
def lars(model, lr, momentum, trust_coeff, weight_decay):
    # always_adapt: timm applies the trust ratio only when weight_decay != 0; LARS always does.
    hp = {"momentum": momentum, "trust_coeff": trust_coeff, "weight_decay": weight_decay}
    return Lars(model.parameters(), lr=lr, **hp, always_adapt=True)


def _check_lbfgs(hp):
    if hp["max_iter"] < 1 or hp["history_size"] < 1:
        raise ValueError("max_iter and history_size must be >= 1")
    if hp["line_search_fn"] not in ("strong_wolfe", "none"):
        raise ValueError(f"line_search_fn must be 'strong_wolfe' or 'none', got {hp['line_search_fn']!r}")


@OPTIMIZERS.register(
    "lbfgs",
    description="L-BFGS: quasi-Newton direction from the last history_size (s, y) pairs, up to max_iter "
    "iterations per step with a strong-Wolfe line search; full batch",
    defaults={"lr": 1.0, "max_iter": 20, "history_size": 10, "line_search_fn": "strong_wolfe"},
    # A step of 1 is the method's own (the line search scales it): its range lies below 1, not around it.
    search_space={"lr": {"low": 0.05, "high": 1.0, "log": True}},
    full_batch=True,
    closure="backward",
    check=_check_lbfgs,
)
def lbfgs(model, lr, max_iter, history_size, line_search_fn):
    return torch.optim.LBFGS(
        model.parameters(),
        lr=lr,
        max_iter=int(max_iter),
        history_size=int(history_size),
        line_search_fn=None if line_search_fn == "none" else line_search_fn,
    )


NEWTON_MAX_PARAMS = 5000


def _check_newton(hp):
    if hp["damping"] < 0:
        raise ValueError(f"damping must be >= 0, got {hp['damping']}")


@OPTIMIZERS.register(
    "newton",
    description="Newton's method, exact Hessian: θ ← θ − η (H + λI)⁻¹∇J, λ = Levenberg damping; full batch",
    defaults={"lr": 1.0, "damping": 1e-4},
    search_space={"lr": {"low": 0.1, "high": 1.0, "log": True}, "damping": {"low": 1e-6, "high": 1e-1, "log": True}},
    full_batch=True,
    closure="loss_graph",
    max_params=NEWTON_MAX_PARAMS,
    check=_check_newton,
)
def newton(model, lr, damping):
    return Newton(model.parameters(), lr=lr, damping=damping)
