"""Where dropout goes: every nn.Sequential of a model is rebuilt through a rewrite of its children, e.g. a
dropout module after each hidden activation (hidden-layer placement)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU)
SPATIAL = {nn.Conv1d: nn.Dropout1d, nn.Conv2d: nn.Dropout2d}

# Rewrites one child of an nn.Sequential given the children before it: None keeps it, a list replaces it.
Rewrite = Callable[[list[nn.Module], nn.Module], "list[nn.Module] | None"]


def rewrite_sequentials(model: nn.Module, rewrite: Rewrite) -> int:
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


def after_activations(model: nn.Module, make: Callable[[], nn.Module], technique: str) -> nn.Module:
    n = rewrite_sequentials(model, lambda before, child: [child, make()] if isinstance(child, ACTIVATIONS) else None)
    if n == 0:
        raise ValueError(f"{technique}: the model has no activation module inside an nn.Sequential to drop after")
    return model


def hidden(model: nn.Module, p: float, technique: str, make: Callable[[], nn.Module]) -> nn.Module:
    # A zero rate inserts nothing, so p = 0 is exactly the undropped baseline (and fits any model).
    return model if p == 0 else after_activations(model, make, technique)
