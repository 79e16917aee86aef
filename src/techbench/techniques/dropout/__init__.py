"""Dropout and its relatives ("Dropout"): what is dropped (units, channels, weights, hidden-state updates), how
the expectation is kept (inverted vs. test-time scaling), and whether the rate is learned (concrete dropout).

Each entry is a factory ``(model, n_train, **hp) -> nn.Module`` that applies the technique to a built model (in
place and/or by wrapping it). Units are dropped after the activations found in the model's nn.Sequential
containers (hidden-layer placement, placement.py); a model with no place for a technique raises ValueError
naming it. Flags (DropoutInfo): ``mc`` — evaluate with Monte-Carlo predictions too; ``widen`` — the model is
built with its width × 1/(1 − p) (the family's ``resolve`` hook rewrites the model spec, so the effective
configuration shows the width that trained); ``needs`` — what the model must have ("conv", "gru");
``modules`` — the stochastic module types the entry inserts (kept in training mode by MC prediction);
``stackable`` — the seeds of a run can train as one vmap'd stack.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from techbench.registry import Info, Registry, build
from techbench.techniques.dropout.modules import (
    TORCH_DROPOUT,
    ConcreteDropout,
    DropConnect,
    ScaledDropout,
    ZoneoutGRU,
    learned_rates,
    mc_predict,
    module_penalties,
)
from techbench.techniques.dropout.placement import ACTIVATIONS, SPATIAL, hidden, rewrite_sequentials
from techbench.techniques.family import Column, Family, Objective
from techbench.workloads.evaluation import scores
from techbench.workloads.models import MODELS


@dataclass(frozen=True)
class DropoutInfo(Info):
    mc: bool = False
    widen: bool = False
    needs: str | None = None  # "conv" or "gru": what the model must have
    modules: tuple[type, ...] = ()
    stackable: bool = False


DROPOUT = Registry("dropout", DropoutInfo)
_P = {"low": 0.0, "high": 0.7}


def apply_dropout(spec: dict, model: nn.Module, n_train: int) -> nn.Module:
    """The model with the dropout technique ``spec = {"name": key, **hp}`` applied."""
    return build(DROPOUT, spec, model, int(n_train))


def stochastic_modules() -> tuple[type, ...]:
    """Every dropout-like module type: torch's and those the registered entries insert."""
    return TORCH_DROPOUT + tuple(dict.fromkeys(t for e in DROPOUT for t in e.info.modules))


class DropoutFamily(Family):
    def resolve(self, spec: dict[str, Any], config: dict[str, Any], n_train: int) -> dict[str, Any]:
        if not self.entry(spec).info.widen:
            return config
        return {**config, "model": widen_model_spec(config["model"], self.hp(spec)["p"])}

    def build_model(self, spec: dict[str, Any], model: nn.Module, n_train: int) -> nn.Module:
        return apply_dropout(spec, model, n_train)

    def objective(self, spec: dict[str, Any], model: nn.Module, n_train: int) -> Objective | None:
        # Concrete dropout's modules add their own regularizer (weight and rate terms) to the cost.
        if not any(callable(getattr(m, "penalty", None)) for m in model.modules()):
            return None
        return Objective(terms=module_penalties)

    def measure(self, spec: dict[str, Any], model: nn.Module, data: Any) -> dict[str, float]:
        out = {f"dropout/p_{layer}": p for layer, p in learned_rates(model).items()}
        if self.entry(spec).info.mc:
            with torch.random.fork_rng(devices=[]):  # the MC masks must not shift the run's random stream
                torch.manual_seed(0)
                mc = mc_predict(model, data.x_test, int(self.hp(spec)["samples"]), stochastic_modules())
            out.update({f"mc/test_{k}": v for k, v in scores(mc, data.y_test).items()})
        return out


FAMILY = DropoutFamily(
    "dropout",
    DROPOUT,
    default={"name": "none"},
    description="units, channels, weights or hidden-state updates dropped in training (Dropout)",
    columns=(
        Column("calibration/ece", "ECE", 1, 3),
        Column("mc/test_acc", "MC test acc %", 100, 2),
        Column("mc/test_nll", "MC NLL", 1, 3),
        Column("mc/test_ece", "MC ECE", 1, 3),
    ),
    summary=("calibration/ece", "mc/test_acc", "mc/test_nll", "mc/test_ece"),
    findings="techbench.report.families.dropout:findings",
)


# --- entries --------------------------------------------------------------------------------------------------


@DROPOUT.register("none", description="no dropout (the baseline)", stackable=True)
def none(model, n_train):
    return model


@DROPOUT.register(
    "standard",
    description="nn.Dropout(p) after every hidden activation, nn.Dropout(p_input) on the input",
    defaults={"p": 0.5, "p_input": 0.0},
    search_space={"p": _P, "p_input": {"low": 0.0, "high": 0.5}},
    stackable=True,
)
def standard(model, n_train, p, p_input):
    model = hidden(model, p, "standard", lambda: nn.Dropout(p))
    # Only wrap when needed: the wrapper hides attributes (e.g. a GRU model's .gru) that other entries look for.
    return nn.Sequential(nn.Dropout(p_input), model) if p_input > 0 else model


@DROPOUT.register(
    "inverted",
    description="inverted dropout written out: train x·m/(1−p), m ~ Bernoulli(1−p); test x",
    defaults={"p": 0.5},
    search_space={"p": _P},
    modules=(ScaledDropout,),
)
def inverted(model, n_train, p):
    return hidden(model, p, "inverted", lambda: ScaledDropout(p, mode="inverted"))


@DROPOUT.register(
    "test_time_scaling",
    description="original dropout: train x·m (unscaled), test x·(1−p)",
    defaults={"p": 0.5},
    search_space={"p": _P},
    modules=(ScaledDropout,),
)
def test_time_scaling(model, n_train, p):
    return hidden(model, p, "test_time_scaling", lambda: ScaledDropout(p, mode="test_time_scaling"))


def _last_weight_layer(modules: list[nn.Module]) -> nn.Module | None:
    layers = [m for m in modules if isinstance(m, (nn.Linear, *SPATIAL))]
    return layers[-1] if layers else None


@DROPOUT.register(
    "spatial",
    description="spatial dropout: whole channels dropped (Dropout1d/2d) after convolution activations",
    defaults={"p": 0.2},
    search_space={"p": {"low": 0.0, "high": 0.5}},
    needs="conv",
    stackable=True,
)
def spatial(model, n_train, p):
    if not any(isinstance(m, tuple(SPATIAL)) for m in model.modules()):
        raise ValueError("spatial: the model has no convolution (nn.Conv1d/Conv2d) whose channels could be dropped")

    def rewrite(before, child):
        conv = _last_weight_layer(before)
        if isinstance(child, ACTIVATIONS) and type(conv) in SPATIAL:
            return [child, SPATIAL[type(conv)](p)]
        return None

    if p > 0 and rewrite_sequentials(model, rewrite) == 0:
        raise ValueError("spatial: no activation follows a convolution inside an nn.Sequential")
    return model


@DROPOUT.register(
    "dropconnect",
    description="DropConnect: weights dropped, W·M/(1−p) per forward pass, all layers but the classifier",
    defaults={"p": 0.5},
    search_space={"p": _P},
    modules=(DropConnect,),
)
def dropconnect(model, n_train, p):
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    classifier = linears[-1] if linears else None
    # Dropping the classifier's weights would drop class scores themselves, not hidden features.
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, *SPATIAL)) and m is not classifier]
    if not layers:
        raise ValueError("dropconnect: the model has no Linear/Conv layer besides the classifier")
    if p > 0:
        for layer in layers:
            parametrize.register_parametrization(layer, "weight", DropConnect(p))
    return model


@DROPOUT.register(
    "mc_dropout",
    description="MC dropout: standard hidden dropout kept on at test, predictions averaged over samples",
    defaults={"p": 0.5, "samples": 30},
    search_space={"p": _P},
    mc=True,
    stackable=True,
)
def mc_dropout(model, n_train, p, samples):
    return hidden(model, p, "mc_dropout", lambda: nn.Dropout(p))


@DROPOUT.register(
    "concrete",
    description="concrete dropout: a learned rate per layer (relaxed Bernoulli mask, Gal et al. 2017)",
    defaults={"init_p": 0.1, "temperature": 0.1, "weight_reg": 1e-6, "dropout_reg": 0.0},
    search_space={
        "init_p": {"low": 0.01, "high": 0.5, "log": True},
        "weight_reg": {"low": 1e-8, "high": 1e-3, "log": True},
    },
    modules=(ConcreteDropout,),
)
def concrete(model, n_train, init_p, temperature, weight_reg, dropout_reg):
    # The paper's 2/(τN) with precision τ = 1: the entropy term's weight shrinks as the data grows.
    reg = dropout_reg or 2.0 / n_train

    def rewrite(before, child):
        if isinstance(child, nn.Linear) and before and isinstance(before[-1], ACTIVATIONS):
            return [ConcreteDropout(child, init_p, temperature, weight_reg, reg)]
        return None

    if rewrite_sequentials(model, rewrite) == 0:
        raise ValueError("concrete: the model has no nn.Linear after an activation inside an nn.Sequential")
    return model


@DROPOUT.register(
    "width_scaled",
    description="standard dropout p on a network widened by 1/(1−p) (the chapter's rule of thumb)",
    defaults={"p": 0.5},
    search_space={"p": _P},
    widen=True,
    stackable=True,
)
def width_scaled(model, n_train, p):
    return hidden(model, p, "width_scaled", lambda: nn.Dropout(p))


@DROPOUT.register(
    "zoneout",
    description="zoneout on a GRU: hidden units keep their previous value with probability p",
    defaults={"p": 0.1},
    search_space={"p": {"low": 0.0, "high": 0.5}},
    needs="gru",
    modules=(ZoneoutGRU,),
)
def zoneout(model, n_train, p):
    if not isinstance(getattr(model, "gru", None), nn.GRU):
        raise ValueError("zoneout: the model has no .gru (nn.GRU) attribute whose hidden state could be zoned out")
    model.gru = ZoneoutGRU(model.gru, p)
    return model


# --- width ------------------------------------------------------------------------------------------------------


def widen_model_spec(model_spec: dict, p: float) -> dict:
    """A copy of ``model_spec`` with its width (the model's ``width`` flag) × 1/(1 − p), rounded to the nearest
    integer."""
    name = model_spec["name"]
    key = MODELS.get(name).info.width
    if key is None:
        widths = [e.name for e in MODELS if e.info.width]
        raise ValueError(f"width_scaled: cannot widen model {name!r}; supported: {', '.join(widths)}")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"width_scaled: p={p} must be in [0, 1)")
    out = copy.deepcopy(dict(model_spec))
    width = out.get(key, MODELS.get(name).defaults[key])

    def scale(w):
        return max(1, int(math.floor(w / (1.0 - p) + 0.5)))

    out[key] = [scale(w) for w in width] if isinstance(width, (list, tuple)) else scale(width)
    return out
