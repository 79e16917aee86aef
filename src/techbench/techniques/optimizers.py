"""Optimizers, with the chapter's default hyperparameters ("Momentum and Advanced Optimizers").

Each entry is a factory ``(model, **hp) -> torch.optim.Optimizer`` over torch.optim; its defaults are the
values the chapter gives and its search space is what ``techbench tune`` explores.

Notation bridge to the chapter: torch's SGD momentum keeps b_t = γ b_{t-1} + g_t and steps θ -= η b_t, which
is the chapter's v_t = γ v_{t-1} + η g_t, θ -= v_t with v_t = η b_t (identical for a constant η).
torch puts ε outside the square root (η g / (√G + ε)) where the chapter writes η g / √(G + ε);
with ε = 1e-8 the two agree to float precision once G ≫ ε².
"""

from __future__ import annotations

import torch
from torch import nn

from techbench.registry import Registry

OPTIMIZERS = Registry("optimizer")


def build_optimizer(spec: dict, model: nn.Module) -> torch.optim.Optimizer:
    hp = {k: v for k, v in spec.items() if k != "name"}
    return OPTIMIZERS.get(spec["name"]).factory(model, **hp)


LR = {"low": 1e-4, "high": 1.0, "log": True}


@OPTIMIZERS.register(
    "sgd",
    description="plain (mini-batch) gradient descent: θ ← θ − η∇J",
    defaults={"lr": 0.01},
    search_space={"lr": LR},
)
def sgd(model, lr):
    return torch.optim.SGD(model.parameters(), lr=lr)


@OPTIMIZERS.register(
    "momentum",
    description="heavy-ball momentum: v ← γv + η∇J, θ ← θ − v",
    defaults={"lr": 0.01, "momentum": 0.9},
    search_space={"lr": {"low": 1e-4, "high": 0.3, "log": True}, "momentum": {"low": 0.5, "high": 0.99}},
    has_momentum=True,
)
def momentum(model, lr, momentum):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)


@OPTIMIZERS.register(
    "nesterov",
    description="Nesterov accelerated gradient: gradient at the look-ahead point θ − γv",
    defaults={"lr": 0.01, "momentum": 0.9},
    search_space={"lr": {"low": 1e-4, "high": 0.3, "log": True}, "momentum": {"low": 0.5, "high": 0.99}},
    has_momentum=True,
)
def nesterov(model, lr, momentum):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=True)


@OPTIMIZERS.register(
    "adagrad",
    description="AdaGrad: G ← G + g², θ ← θ − η g / √(G + ε)",
    defaults={"lr": 0.01, "eps": 1e-8},
    search_space={"lr": LR},
)
def adagrad(model, lr, eps):
    return torch.optim.Adagrad(model.parameters(), lr=lr, eps=eps)


@OPTIMIZERS.register(
    "rmsprop",
    description="RMSProp: G ← βG + (1−β)g², θ ← θ − η g / √(G + ε)",
    defaults={"lr": 0.001, "beta": 0.9, "eps": 1e-8},
    search_space={"lr": {"low": 1e-5, "high": 1e-1, "log": True}},
)
def rmsprop(model, lr, beta, eps):
    return torch.optim.RMSprop(model.parameters(), lr=lr, alpha=beta, eps=eps)


@OPTIMIZERS.register(
    "adam",
    description="Adam: bias-corrected first and second moments, θ ← θ − η m̂ / (√v̂ + ε)",
    defaults={"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
    search_space={"lr": {"low": 1e-5, "high": 1e-1, "log": True}},
    has_betas=True,
)
def adam(model, lr, beta1, beta2, eps):
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(beta1, beta2), eps=eps)


@OPTIMIZERS.register(
    "adamw",
    description="AdamW: Adam with decoupled weight decay, θ ← θ − η m̂/(√v̂ + ε) − ηλθ",
    defaults={"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
    search_space={
        "lr": {"low": 1e-5, "high": 1e-1, "log": True},
        "weight_decay": {"low": 1e-5, "high": 1e-1, "log": True},
    },
    has_betas=True,
)
def adamw(model, lr, beta1, beta2, eps, weight_decay):
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
