"""The modules dropout variants insert, and the measurements made with them after fit: dropout written out
(inverted vs. test-time scaling), DropConnect's weight masks, concrete dropout's learned rate, zoneout's GRU
cell loop; Monte-Carlo predictions, learned rates and the penalties some modules add to the loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# torch's own dropout modules; the variants' modules join them through their registry entries' ``modules``.
TORCH_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


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
        # m/(1−p) first, then one product, as torch's CPU dropout orders it: the same roundings, so `inverted` and
        # `standard` agree bit for bit in forward and backward rather than to the last ulp.
        return x * mask.div_(keep) if self.mode == "inverted" else x * mask

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


def module_penalties(model: nn.Module) -> torch.Tensor | None:
    """The sum of every submodule's ``penalty()`` (to add to the loss); None when no submodule has one."""
    terms = [m.penalty() for m in model.modules() if callable(getattr(m, "penalty", None))]
    return torch.stack(terms).sum() if terms else None


@torch.no_grad()
def mc_predict(
    model: nn.Module, x: torch.Tensor, samples: int, stochastic: tuple[type, ...] = TORCH_DROPOUT, chunk: int = 4096
) -> torch.Tensor:
    """MC dropout: mean softmax over ``samples`` forward passes with only the modules of the ``stochastic``
    types (the dropout-like ones) in training mode."""
    if samples < 1:
        raise ValueError(f"mc_predict: samples={samples} must be >= 1")
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        for m in model.modules():
            # Not m.train(): that would also flip the wrapped layer (and e.g. a BatchNorm inside it) to train.
            if isinstance(m, stochastic):
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
