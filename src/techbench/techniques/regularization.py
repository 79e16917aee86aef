"""Weight penalties ("Regularization Techniques (L1 and L2)").

Every entry follows the chapter's scaling by the training-set size m: L2 adds λ/(2m)·Σw² to the cost, so its
gradient term is (λ/m)·w and plain SGD shrinks each weight by the factor (1 − αλ/m) before the data step;
L1 adds λ/m·Σ|w|, gradient term (λ/m)·sign(w). Because the training loss is a mean over the mini-batch, the
same penalty is added to every mini-batch's loss (the cost J is the mean over m examples plus one penalty).

A factory ``(model, n_train, **hp) -> Objective`` returns the penalty to add to the loss and, for decoupled
weight decay, the shrink applied to the weights before each optimizer step (AdamW's form, for any optimizer).
Every run also measures its weights (norm, exact and near zeros) through this family's ``measure`` hook.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from techbench.registry import Info, Registry, build
from techbench.techniques.family import Column, Family, Objective


@dataclass(frozen=True)
class RegularizerInfo(Info):
    stackable: bool = True  # declared term by term (Objective.l1/l2/decay/prox): a stack applies them per member


REGULARIZERS = Registry("regularizer", RegularizerInfo)

LAM_SPACE = {"lam": {"low": 1e-3, "high": 10.0, "log": True}}


def build_regularizer(spec: dict, model: nn.Module, n_train: int) -> Objective:
    return build(REGULARIZERS, spec, model, max(int(n_train), 1))


class RegularizerFamily(Family):
    def objective(self, spec: dict[str, Any], model: nn.Module, n_train: int) -> Objective:
        return build_regularizer(spec, model, n_train)

    def measure(self, spec: dict[str, Any], model: nn.Module, data: Any) -> dict[str, float]:
        return weight_stats(model)


FAMILY = RegularizerFamily(
    "regularizer",
    REGULARIZERS,
    default={"name": "none"},
    description="weight penalties (Regularization Techniques: L1 and L2)",
    columns=(
        Column("weights/l2_norm", "‖W‖₂", 1, 2),
        Column("weights/zero_frac", "exact zeros %", 100, 2),
        Column("weights/near_zero_frac", "near-zero (abs < 1e-3) %", 100, 1),
    ),
    summary=("weights/l2_norm", "weights/zero_frac", "weights/near_zero_frac"),
    findings="techbench.report.families.regularization:findings",
)


def weight_params(model: nn.Module, include_bias: bool = True) -> list[nn.Parameter]:
    """Trainable parameters; biases (and other 1-D parameters such as norm scales) only if asked."""
    return [p for p in model.parameters() if p.requires_grad and (include_bias or p.dim() > 1)]


def weighted_layers(model: nn.Module) -> list[nn.Module]:
    """Layers with a weight matrix/kernel, in forward order (the order the model registers them)."""
    return [m for m in model.modules() if isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.dim() > 1]


@REGULARIZERS.register("none", description="no penalty (the baseline)")
def none(model, n_train):
    return Objective()


@REGULARIZERS.register(
    "l2",
    description="L2 penalty λ/(2m)·Σw² on every parameter, biases included (coupled: part of the gradient)",
    defaults={"lam": 0.5},
    search_space=LAM_SPACE,
)
def l2(model, n_train, lam):
    return Objective(l2=[(p, lam / (2 * n_train)) for p in weight_params(model)])


@REGULARIZERS.register(
    "l2_no_bias",
    description="L2 penalty λ/(2m)·Σw² on weights only: biases left unregularized",
    defaults={"lam": 0.5},
    search_space=LAM_SPACE,
)
def l2_no_bias(model, n_train, lam):
    return Objective(l2=[(p, lam / (2 * n_train)) for p in weight_params(model, include_bias=False)])


@REGULARIZERS.register(
    "l1",
    description="L1 penalty λ/m·Σ|w| on weights (subgradient sign(w) at 0 is 0): drives weights towards zero",
    defaults={"lam": 0.5},
    search_space=LAM_SPACE,
)
def l1(model, n_train, lam):
    return Objective(l1=[(p, lam / n_train) for p in weight_params(model, include_bias=False)])


@REGULARIZERS.register(
    "l1_proximal",
    description="L1 by proximal gradient: soft-threshold |w| by αλ/m after each step, which reaches exact zeros",
    defaults={"lam": 0.5},
    search_space=LAM_SPACE,
)
def l1_proximal(model, n_train, lam):
    # A subgradient step almost never lands exactly on 0; the proximal step (ISTA) sets every weight whose
    # magnitude is below the threshold to exactly 0, which is how L1 produces sparse solutions.
    return Objective(prox=[(p, lam / n_train) for p in weight_params(model, include_bias=False)])


@REGULARIZERS.register(
    "elastic_net",
    description="elastic net λ/m·(r·Σ|w| + (1−r)/2·Σw²) on weights: L1's sparsity with L2's grouping",
    defaults={"lam": 0.5, "l1_ratio": 0.5},
    search_space={**LAM_SPACE, "l1_ratio": {"low": 0.0, "high": 1.0}},
)
def elastic_net(model, n_train, lam, l1_ratio):
    params = weight_params(model, include_bias=False)
    return Objective(
        l1=[(p, lam * l1_ratio / n_train) for p in params],
        l2=[(p, lam * (1 - l1_ratio) / (2 * n_train)) for p in params],
    )


@REGULARIZERS.register(
    "weight_decay",
    description="decoupled weight decay (AdamW's form for any optimizer): w ← w − α(λ/m)·w outside the gradient",
    defaults={"lam": 0.5},
    search_space=LAM_SPACE,
)
def weight_decay(model, n_train, lam):
    # With the same λ/m scale as l2, plain SGD makes identical updates under both; adaptive optimizers do not
    # (their preconditioner rescales a coupled penalty's gradient but not a decoupled shrink).
    return Objective(decay=[(p, lam / n_train) for p in weight_params(model, include_bias=False)])


def _check_layerwise(hp: dict) -> None:
    if hp["lam_first"] == 0 and hp["lam_last"] > 0 or hp["lam_last"] == 0 and hp["lam_first"] > 0:
        raise ValueError("l2_layerwise interpolates geometrically: lam_first and lam_last must be both > 0, or both 0")


@REGULARIZERS.register(
    "l2_layerwise",
    description="L2 with a strength per layer, geometric from lam_first (input layer) to lam_last (output layer)",
    defaults={"lam_first": 0.05, "lam_last": 5.0},
    search_space={"lam_first": LAM_SPACE["lam"], "lam_last": LAM_SPACE["lam"]},
    check=_check_layerwise,
)
def l2_layerwise(model, n_train, lam_first, lam_last):
    layers = weighted_layers(model)
    lams = geometric(lam_first, lam_last, len(layers))
    return Objective(l2=[(layer.weight, lam / (2 * n_train)) for layer, lam in zip(layers, lams, strict=True)])


def geometric(first: float, last: float, n: int) -> list[float]:
    """n strengths from first to last, evenly spaced in log scale (all 0 when first is 0)."""
    return [first * (last / first) ** (i / max(n - 1, 1)) if first else 0.0 for i in range(n)]


@torch.no_grad()
def weight_stats(model: nn.Module, near_zero: float = 1e-3) -> dict[str, float]:
    """Weight norm and sparsity of the weight matrices/kernels (biases excluded)."""
    ws = [p.detach().flatten() for p in weight_params(model, include_bias=False)]
    if not ws:
        return {}
    w = torch.cat(ws)
    return {
        "weights/l2_norm": float(w.norm()),
        "weights/l1_norm": float(w.abs().sum()),
        "weights/zero_frac": float((w == 0).float().mean()),
        "weights/near_zero_frac": float((w.abs() < near_zero).float().mean()),
    }
