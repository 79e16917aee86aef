"""Dropout and its relatives ("Dropout"): what is dropped (units, channels, weights, hidden-state updates), how
the expectation is kept (inverted vs. test-time scaling), and whether the rate is learned (concrete dropout).

Each entry is a factory ``(model, n_train, **hp) -> nn.Module`` that applies the technique to a built model (in
place and/or by wrapping it). Units are dropped after the activations found in the model's nn.Sequential
containers (hidden-layer placement); a model with no place for a technique raises ValueError naming it.
Registry meta: ``mc=True`` asks the evaluation code for ``mc_predict``; ``widen=True`` asks the caller to build
the model from ``model_spec_for(config)`` (width × 1/(1 − p)).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from techbench.registry import Registry

DROPOUT = Registry("dropout")

_ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU)
_SPATIAL = {nn.Conv1d: nn.Dropout1d, nn.Conv2d: nn.Dropout2d}
_P = {"low": 0.0, "high": 0.7}

# Rewrites one child of an nn.Sequential given the children before it: None keeps it, a list replaces it.
Rewrite = Callable[[list[nn.Module], nn.Module], "list[nn.Module] | None"]


def apply_dropout(spec: dict, model: nn.Module, n_train: int) -> nn.Module:
    """The model with the dropout technique ``spec = {"name": key, **hp}`` applied."""
    entry = DROPOUT.get(spec["name"])
    hp = {**entry.defaults, **{k: v for k, v in spec.items() if k != "name"}}
    return entry.factory(model, int(n_train), **hp)


# --- modules --------------------------------------------------------------------------------------------------


class ScaledDropout(nn.Module):
    """Dropout written out, with the two ways of keeping the expected activation equal in training and test.

    A unit is kept with probability 1 − p (p is the dropout rate). The chapter writes the mask as Bernoulli(p)
    "with probability p of being 1" yet calls p the dropout rate and scales by 1/(1 − p); only keep-probability
    1 − p makes that scaling unbiased (the literal reading has expectation x·p/(1 − p)), so that is the one used.
    """

    def __init__(self, p: float, mode: str = "inverted"):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout rate p={p} must be in [0, 1)")
        if mode not in ("inverted", "test_time_scaling"):
            raise ValueError(f"mode {mode!r} must be 'inverted' or 'test_time_scaling'")
        self.p, self.mode = float(p), mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = 1.0 - self.p
        if not self.training or self.p == 0.0:
            return x if self.mode == "inverted" else x * keep
        mask = torch.empty_like(x).bernoulli_(keep)
        return x * mask / keep if self.mode == "inverted" else x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"


class DropConnect(nn.Module):
    """A weight parametrization: W·M/(1 − p) with M ~ Bernoulli(1 − p) per entry in training, W in eval."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return weight
        # One mask per access of layer.weight, i.e. per forward pass: every example of the batch shares it.
        return weight * torch.empty_like(weight).bernoulli_(1.0 - self.p) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ConcreteDropout(nn.Module):
    """Concrete dropout (Gal, Hron & Kendall 2017) on the input of ``layer``, with a learned rate p."""

    def __init__(self, layer: nn.Linear, init_p: float, temperature: float, weight_reg: float, dropout_reg: float):
        super().__init__()
        self.layer = layer
        self.temperature, self.weight_reg, self.dropout_reg = float(temperature), float(weight_reg), float(dropout_reg)
        self.p_logit = nn.Parameter(torch.tensor(math.log(init_p) - math.log(1.0 - init_p)))

    @property
    def p(self) -> float:
        return float(torch.sigmoid(self.p_logit.detach()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.layer(x)
        eps = 1e-7
        p = torch.sigmoid(self.p_logit)
        u = torch.rand_like(x)
        # Relaxed Bernoulli(p) "drop" indicator: differentiable in p, so the rate can be learned by gradient.
        logits = torch.log(p + eps) - torch.log(1 - p + eps) + torch.log(u + eps) - torch.log(1 - u + eps)
        drop = torch.sigmoid(logits / self.temperature)
        return self.layer(x * (1 - drop) / (1 - p))

    def penalty(self) -> torch.Tensor:
        """weight_reg·‖W‖²/(1 − p) + dropout_reg·K·(p log p + (1 − p) log(1 − p)), K = in_features."""
        p = torch.sigmoid(self.p_logit)
        weight_term = self.weight_reg * self.layer.weight.pow(2).sum() / (1 - p)
        # Negative entropy of Bernoulli(p): minimal at p = ½, it keeps the rate from collapsing to 0.
        neg_entropy = torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p)
        return weight_term + self.dropout_reg * self.layer.in_features * neg_entropy

    def extra_repr(self) -> str:
        regs = f"weight_reg={self.weight_reg}, dropout_reg={self.dropout_reg}"
        return f"p={self.p:.4f}, temperature={self.temperature}, {regs}"


class ZoneoutGRU(nn.Module):
    """A one-layer batch_first GRU (``out, h = gru(x)``) with zoneout: each hidden unit keeps its previous value
    with probability p instead of taking the cell's update; eval uses the expectation p·h + (1 − p)·update."""

    def __init__(self, gru: nn.GRU, p: float):
        super().__init__()
        if gru.num_layers != 1 or not gru.batch_first or gru.bidirectional:
            raise ValueError("zoneout: needs a one-layer, unidirectional, batch_first nn.GRU")
        w = gru.weight_ih_l0
        self.cell = nn.GRUCell(gru.input_size, gru.hidden_size, bias=gru.bias, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            self.cell.weight_ih.copy_(gru.weight_ih_l0)
            self.cell.weight_hh.copy_(gru.weight_hh_l0)
            if gru.bias:
                self.cell.bias_ih.copy_(gru.bias_ih_l0)
                self.cell.bias_hh.copy_(gru.bias_hh_l0)
        self.p = float(p)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = x.new_zeros(x.shape[0], self.cell.hidden_size) if h0 is None else h0[0]
        outs = []
        for t in range(x.shape[1]):
            update = self.cell(x[:, t], h)
            if self.training:
                keep = torch.empty_like(h).bernoulli_(self.p)
                h = keep * h + (1 - keep) * update
            else:
                h = self.p * h + (1 - self.p) * update
            outs.append(h)
        return torch.stack(outs, dim=1), h.unsqueeze(0)

    def extra_repr(self) -> str:
        return f"p={self.p}"


_DROPOUT_LIKE = (
    ScaledDropout,
    DropConnect,
    ConcreteDropout,
    ZoneoutGRU,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
)


# --- placement ------------------------------------------------------------------------------------------------


def _rewrite_sequentials(model: nn.Module, rewrite: Rewrite) -> int:
    """Rebuilds every nn.Sequential in ``model`` (nested ones included) through ``rewrite``; returns how many
    children were rewritten. The containers are edited in place so their parents keep pointing at them."""
    count = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        old, new = list(seq), []
        for i, child in enumerate(old):
            out = rewrite(old[:i], child)
            count += out is not None
            new += [child] if out is None else out
        if len(new) != len(old) or any(a is not b for a, b in zip(new, old, strict=False)):
            for key in list(seq._modules):
                del seq._modules[key]
            for i, child in enumerate(new):
                seq.add_module(str(i), child)
    return count


def _after_activations(model: nn.Module, make: Callable[[], nn.Module], technique: str) -> nn.Module:
    n = _rewrite_sequentials(model, lambda before, child: [child, make()] if isinstance(child, _ACTIVATIONS) else None)
    if n == 0:
        raise ValueError(f"{technique}: the model has no activation module inside an nn.Sequential to drop after")
    return model


def _hidden(model: nn.Module, p: float, technique: str, make: Callable[[], nn.Module]) -> nn.Module:
    # A zero rate inserts nothing, so p = 0 is exactly the undropped baseline (and fits any model).
    return model if p == 0 else _after_activations(model, make, technique)


# --- entries --------------------------------------------------------------------------------------------------


@DROPOUT.register("none", description="no dropout (the baseline)")
def none(model, n_train):
    return model


@DROPOUT.register(
    "standard",
    description="nn.Dropout(p) after every hidden activation, nn.Dropout(p_input) on the input",
    defaults={"p": 0.5, "p_input": 0.0},
    search_space={"p": _P, "p_input": {"low": 0.0, "high": 0.5}},
)
def standard(model, n_train, p, p_input):
    model = _hidden(model, p, "standard", lambda: nn.Dropout(p))
    # Only wrap when needed: the wrapper hides attributes (e.g. a GRU model's .gru) that other entries look for.
    return nn.Sequential(nn.Dropout(p_input), model) if p_input > 0 else model


@DROPOUT.register(
    "inverted",
    description="inverted dropout written out: train x·m/(1−p), m ~ Bernoulli(1−p); test x",
    defaults={"p": 0.5},
    search_space={"p": _P},
)
def inverted(model, n_train, p):
    return _hidden(model, p, "inverted", lambda: ScaledDropout(p, mode="inverted"))


@DROPOUT.register(
    "test_time_scaling",
    description="original dropout: train x·m (unscaled), test x·(1−p)",
    defaults={"p": 0.5},
    search_space={"p": _P},
)
def test_time_scaling(model, n_train, p):
    return _hidden(model, p, "test_time_scaling", lambda: ScaledDropout(p, mode="test_time_scaling"))


def _last_weight_layer(modules: list[nn.Module]) -> nn.Module | None:
    layers = [m for m in modules if isinstance(m, (nn.Linear, *_SPATIAL))]
    return layers[-1] if layers else None


@DROPOUT.register(
    "spatial",
    description="spatial dropout: whole channels dropped (Dropout1d/2d) after convolution activations",
    defaults={"p": 0.2},
    search_space={"p": {"low": 0.0, "high": 0.5}},
)
def spatial(model, n_train, p):
    if not any(isinstance(m, tuple(_SPATIAL)) for m in model.modules()):
        raise ValueError("spatial: the model has no convolution (nn.Conv1d/Conv2d) whose channels could be dropped")

    def rewrite(before, child):
        conv = _last_weight_layer(before)
        if isinstance(child, _ACTIVATIONS) and type(conv) in _SPATIAL:
            return [child, _SPATIAL[type(conv)](p)]
        return None

    if p > 0 and _rewrite_sequentials(model, rewrite) == 0:
        raise ValueError("spatial: no activation follows a convolution inside an nn.Sequential")
    return model


@DROPOUT.register(
    "dropconnect",
    description="DropConnect: weights dropped, W·M/(1−p) per forward pass, all layers but the classifier",
    defaults={"p": 0.5},
    search_space={"p": _P},
)
def dropconnect(model, n_train, p):
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    classifier = linears[-1] if linears else None
    # Dropping the classifier's weights would drop class scores themselves, not hidden features.
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, *_SPATIAL)) and m is not classifier]
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
)
def mc_dropout(model, n_train, p, samples):
    return _hidden(model, p, "mc_dropout", lambda: nn.Dropout(p))


@DROPOUT.register(
    "concrete",
    description="concrete dropout: a learned rate per layer (relaxed Bernoulli mask, Gal et al. 2017)",
    defaults={"init_p": 0.1, "temperature": 0.1, "weight_reg": 1e-6, "dropout_reg": 0.0},
    search_space={
        "init_p": {"low": 0.01, "high": 0.5, "log": True},
        "weight_reg": {"low": 1e-8, "high": 1e-3, "log": True},
    },
)
def concrete(model, n_train, init_p, temperature, weight_reg, dropout_reg):
    # The paper's 2/(τN) with precision τ = 1: the entropy term's weight shrinks as the data grows.
    reg = dropout_reg or 2.0 / n_train

    def rewrite(before, child):
        if isinstance(child, nn.Linear) and before and isinstance(before[-1], _ACTIVATIONS):
            return [ConcreteDropout(child, init_p, temperature, weight_reg, reg)]
        return None

    if _rewrite_sequentials(model, rewrite) == 0:
        raise ValueError("concrete: the model has no nn.Linear after an activation inside an nn.Sequential")
    return model


@DROPOUT.register(
    "width_scaled",
    description="standard dropout p on a network widened by 1/(1−p) (the chapter's rule of thumb)",
    defaults={"p": 0.5},
    search_space={"p": _P},
    widen=True,
)
def width_scaled(model, n_train, p):
    return _hidden(model, p, "width_scaled", lambda: nn.Dropout(p))


@DROPOUT.register(
    "zoneout",
    description="zoneout on a GRU: hidden units keep their previous value with probability p",
    defaults={"p": 0.1},
    search_space={"p": {"low": 0.0, "high": 0.5}},
)
def zoneout(model, n_train, p):
    if not isinstance(getattr(model, "gru", None), nn.GRU):
        raise ValueError("zoneout: the model has no .gru (nn.GRU) attribute whose hidden state could be zoned out")
    model.gru = ZoneoutGRU(model.gru, p)
    return model


# --- width ------------------------------------------------------------------------------------------------------

_WIDTH_KEY = {"mlp": "hidden", "cnn1d": "channels", "gru": "hidden"}


def widen_model_spec(model_spec: dict, p: float) -> dict:
    """A copy of ``model_spec`` with its width × 1/(1 − p), rounded to the nearest integer."""
    name = model_spec["name"]
    if name not in _WIDTH_KEY:
        raise ValueError(f"width_scaled: cannot widen model {name!r}; supported: {', '.join(_WIDTH_KEY)}")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"width_scaled: p={p} must be in [0, 1)")
    from techbench.workloads.models import MODELS

    key = _WIDTH_KEY[name]
    out = copy.deepcopy(dict(model_spec))
    width = out.get(key, MODELS.get(name).defaults[key])

    def scale(w):
        return max(1, int(math.floor(w / (1.0 - p) + 0.5)))

    out[key] = [scale(w) for w in width] if isinstance(width, (list, tuple)) else scale(width)
    return out


def model_spec_for(config: dict) -> dict:
    """The model component a run builds: widened when its dropout entry asks for it (meta widen=True)."""
    spec = config.get("dropout") or {"name": "none"}
    if isinstance(spec, str):
        spec = {"name": spec}
    entry = DROPOUT.get(spec["name"])
    if not entry.meta.get("widen"):
        return config["model"]
    return widen_model_spec(config["model"], {**entry.defaults, **spec}["p"])


# --- training and evaluation hooks -------------------------------------------------------------------------------


def module_penalties(model: nn.Module) -> torch.Tensor | None:
    """The sum of every submodule's ``penalty()`` (to add to the loss); None when no submodule has one."""
    terms = [m.penalty() for m in model.modules() if callable(getattr(m, "penalty", None))]
    return torch.stack(terms).sum() if terms else None


@torch.no_grad()
def mc_predict(model: nn.Module, x: torch.Tensor, samples: int, chunk: int = 4096) -> torch.Tensor:
    """MC dropout: mean softmax over ``samples`` forward passes with only the dropout-like modules stochastic."""
    if samples < 1:
        raise ValueError(f"mc_predict: samples={samples} must be >= 1")
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        for m in model.modules():
            # Not m.train(): that would also flip the wrapped layer (and e.g. a BatchNorm inside it) to train.
            if isinstance(m, _DROPOUT_LIKE):
                m.training = True
        parts = []
        for start in range(0, len(x), chunk):
            xb = x[start : start + chunk]
            parts.append(sum(F.softmax(model(xb), dim=-1) for _ in range(samples)) / samples)
        return torch.cat(parts)
    finally:
        for m, mode in modes.items():
            m.training = mode


def learned_rates(model: nn.Module) -> dict[str, float]:
    """Concrete dropout's current rates, ``{"layer0": p0, ...}`` in module order; {} when there are none."""
    layers = [m for m in model.modules() if isinstance(m, ConcreteDropout)]
    return {f"layer{i}": m.p for i, m in enumerate(layers)}
