"""The weight penalties of a stack (stack_module.py): every member's Objective (its L2 and L1 terms, decoupled decay
and L1's proximal step, each a (parameter, coefficient) list built on the member's own model) laid out as (K, P)
coefficient tensors over the stacked parameter, so each row is penalized, shrunk and thresholded with its own
member's coefficients — the same element-wise operations the single run applies to each parameter."""

from __future__ import annotations

import torch
from torch import nn

from techbench.techniques import FAMILIES, Objective


class StackedObjective:
    def __init__(self, objectives: list[Objective], models: list[nn.Module], segments, names: list[str], width: int):
        self.k, self.width = len(models), width
        self.spans = dict(zip(names, segments, strict=True))
        self.models = models
        # Penalty coefficients in the parameter's dtype (as a Python float meets a float32 tensor); the decay and
        # proximal thresholds in float64, combined with the float64 learning rate before the cast, as lr·c is.
        self.l2 = self._table(objectives, "l2", torch.float32)
        self.l1 = self._table(objectives, "l1", torch.float32)
        self.decay = self._table(objectives, "decay", torch.float64)
        self.prox = self._table(objectives, "prox", torch.float64)

    @classmethod
    def of(cls, models, runs, segments, names, width: int) -> StackedObjective | None:
        """The members' objectives, or None when no member has a penalty, decay or proximal step. ValueError for
        an objective computed from one model (``terms``), which has no per-row form."""
        objectives = [
            Objective.combine([f.objective(run[f.name], model, run.n_train) for f in FAMILIES])
            for model, run in zip(models, runs, strict=True)
        ]
        if any(o.one_model for o in objectives):
            raise ValueError("an objective term of one model (not a per-parameter penalty) cannot be stacked")
        if not any(o.active for o in objectives):
            return None
        return cls(objectives, models, segments, names, width)

    def _table(self, objectives: list[Objective], kind: str, dtype: torch.dtype) -> torch.Tensor | None:
        if not any(getattr(o, kind) for o in objectives):
            return None
        table = torch.zeros(self.k, self.width, dtype=dtype)
        for i, (objective, model) in enumerate(zip(objectives, self.models, strict=True)):
            name_of = {id(p): n for n, p in model.named_parameters()}
            for p, c in getattr(objective, kind):
                start, end, _ = self.spans[name_of[id(p)]]
                table[i, start:end] += c  # a parameter named twice (elastic net's two terms are separate kinds)
        return table

    def penalty(self, flat: torch.Tensor) -> torch.Tensor | None:
        """(K,): each member's penalty on its row, or None without L1/L2 terms."""
        terms = []
        if self.l2 is not None:
            terms.append((self.l2 * flat.pow(2)).sum(1))
        if self.l1 is not None:
            terms.append((self.l1 * flat.abs()).sum(1))
        return None if not terms else terms[0] if len(terms) == 1 else terms[0] + terms[1]

    @torch.no_grad()
    def decay_(self, flat: torch.Tensor, lr: torch.Tensor) -> None:
        """w ← w·(1 − lr·c) with each member's lr (a (K, 1) float64 column) and coefficients."""
        if self.decay is not None:
            flat.mul_((1.0 - lr * self.decay).to(flat.dtype))

    @torch.no_grad()
    def prox_(self, flat: torch.Tensor, lr: torch.Tensor) -> None:
        """w ← sign(w)·max(|w| − lr·c, 0) with each member's lr and thresholds."""
        if self.prox is not None:
            flat.copy_(flat.sign() * (flat.abs() - (lr * self.prox).to(flat.dtype)).clamp_min(0.0))
