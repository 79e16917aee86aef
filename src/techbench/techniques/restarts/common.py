"""Pieces every restart procedure shares: member records, selection by validation loss, ensembles, the
expected best-of-n, and the ways a model is re-initialized or perturbed."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from techbench.techniques.restarts.contract import RestartContext, RestartOutcome

RESTARTS_SPACE = {"restarts": {"low": 2, "high": 16}}
EPOCHS_PER_RESTART_SPACE = {"epochs_per_restart": {"low": 1, "high": 10}}
CYCLES_SPACE = {"cycles": {"low": 2, "high": 8}, "t_mult": {"choices": [1, 2]}}
RESTARTS_CHECK = ("restarts >= 1", lambda hp: hp["restarts"] >= 1)
EPOCHS_PER_RESTART_CHECK = ("epochs_per_restart >= 0", lambda hp: hp["epochs_per_restart"] >= 0)
CYCLES_CHECKS = (("cycles >= 1", lambda hp: hp["cycles"] >= 1), ("t_mult >= 1", lambda hp: hp["t_mult"] >= 1))


def outcome(final: nn.Module, members: list[dict], metrics=None, curves=None) -> RestartOutcome:
    return RestartOutcome(final, members, dict(metrics or {}), dict(curves or {}))


def member(ctx: RestartContext, model: nn.Module, epochs: float, **extra: float) -> dict[str, float]:
    """One solution's record: its val/test scores, the epochs trained for it and the procedure's flags."""
    return {**ctx.score(model), "epochs": float(epochs), **{k: float(v) for k, v in extra.items()}}


def loss_key(v: float) -> float:
    return v if math.isfinite(v) else math.inf  # a diverged solution (NaN loss) ranks last


def best_index(members: Sequence[dict[str, float]]) -> int:
    """Index of the member with the lowest validation loss (the first one on ties)."""
    return min(range(len(members)), key=lambda i: (loss_key(members[i]["val_loss"]), i))


def acc_nll(probs: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Accuracy and mean negative log-likelihood of predicted probabilities."""
    acc = float((probs.argmax(1) == y).float().mean())
    nll = float(-probs.gather(1, y[:, None]).clamp_min(1e-12).log().mean())
    return acc, nll


def ensemble_scores(ctx: RestartContext, models: Sequence[nn.Module]) -> tuple[list[float], list[float]]:
    """Test accuracy and NLL of the averaged softmax of the first n models, n = 1..len(models)."""
    y = ctx.data.y_test
    accs, nlls, total = [], [], None
    for n, model in enumerate(models, 1):
        probs = ctx.probs(model)
        total = probs if total is None else total + probs
        acc, nll = acc_nll(total / n, y)
        accs.append(acc)
        nlls.append(nll)
    return accs, nlls


def fit_epochs(module) -> int:
    return len(module.epoch_times)


def expected_best_of_n(val_losses: Sequence[float], scores: Sequence[float]) -> list[float]:
    """E[score of the member with the lowest val loss among n drawn without replacement from the N], n = 1..N.

    With members ranked by val loss (j = 1 the best), the j-th is the best of a random n-subset iff it is in the
    subset and the other n − 1 come from the N − j ranked below it: P = C(N − j, n − 1) / C(N, n)."""
    n_all = len(val_losses)
    order = sorted(range(n_all), key=lambda i: (loss_key(val_losses[i]), i))
    ranked = [scores[i] for i in order]
    return [
        sum(math.comb(n_all - j, n - 1) * ranked[j - 1] for j in range(1, n_all - n + 2)) / math.comb(n_all, n)
        for n in range(1, n_all + 1)
    ]


def weighted_layers(model: nn.Module) -> list[nn.Module]:
    """Linear and convolution layers, in the order the model registers them."""
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]


@torch.no_grad()
def reinit_(model: nn.Module, scheme: str, seed: int) -> nn.Module:
    """Re-initialize every Linear/Conv weight with ``scheme`` (xavier: xavier_uniform_, he: kaiming_normal_ for
    ReLU, orthogonal: orthogonal_) and zero their biases, reproducibly from ``seed``."""
    init = {
        "xavier": nn.init.xavier_uniform_,
        "he": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
        "orthogonal": nn.init.orthogonal_,
    }[scheme]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in weighted_layers(model):
            init(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return model


@torch.no_grad()
def perturb_(model: nn.Module, seed: int, scale: float, relative: bool = False) -> nn.Module:
    """θ ← θ + scale·n (or θ + scale·|θ|·n when ``relative``), n standard Gaussian per parameter from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if not p.requires_grad:
            continue
        n = torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device)
        p.add_(scale * (p.abs() * n if relative else n))
    return model


@torch.no_grad()
def reinit_last_(model: nn.Module, layers: int, seed: int) -> nn.Module:
    """Reset the last ``layers`` Linear/Conv layers to a fresh PyTorch default initialization from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in weighted_layers(model)[-layers:]:
            layer.reset_parameters()
    return model
