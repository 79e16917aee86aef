"""Gradient centralization (Yong et al. 2020, "Gradient Centralization: A New Optimization Technique for Deep
Neural Networks"), as a modifier that composes with any first-order optimizer.

For every weight with more than one dimension, g ← g − mean(g over all dims except dim 0), i.e. each output
unit's (row's / filter's) gradient is made zero-mean; biases and other 1-D parameters are left untouched.
timm 1.0 ships no gradient-centralization utility, so this is a torch optimizer step pre-hook.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch

from techbench.registry import Entry, Registry
from techbench.techniques.stacked_updates import centralized


@torch.no_grad()
def centralize_(params: Iterable[torch.Tensor]) -> None:
    """Centralize, in place, the gradients of the parameters with dim > 1."""
    for p in params:
        g = p.grad
        if g is not None and g.dim() > 1 and not g.is_sparse:
            g.sub_(g.mean(dim=tuple(range(1, g.dim())), keepdim=True))


def centralize_gradients(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Make ``optimizer`` centralize its parameters' gradients before every update; returns it.

    A pre-hook runs before ``step``'s body. Without a closure the gradients are already there, so they are
    centralized at once. With a closure they are not yet computed: Lightning's automatic optimization (fp32)
    calls ``optimizer.step(closure=...)`` and the closure does the backward pass inside ``step``. Centralizing
    in the hook would then touch the previous step's (or no) gradients, so the closure is wrapped instead and
    the gradients are centralized right after it has produced them.
    """

    def params() -> list[torch.Tensor]:
        # Read at every step: load_state_dict / add_param_group replace the group list.
        return [p for group in optimizer.param_groups for p in group["params"]]

    def pre_hook(opt: torch.optim.Optimizer, args: tuple, kwargs: dict[str, Any]):
        # args[0] is the optimizer itself (the hook sees the unbound call's arguments).
        positional = len(args) > 1 and args[1] is not None
        closure: Callable[[], Any] | None = kwargs.get("closure") or (args[1] if positional else None)
        if closure is None:
            centralize_(params())
            return None

        def centralized_closure():
            loss = closure()
            centralize_(params())
            return loss

        if positional:
            return (args[0], centralized_closure, *args[2:]), kwargs
        return args, {**kwargs, "closure": centralized_closure}

    optimizer.register_step_pre_hook(pre_hook)
    return optimizer


def add_gc_variant(registry: Registry, entry: Entry) -> None:
    """Register ``<name>+gc`` for a first-order entry (a registry hook: every entry gets its variant).

    Entries with a ``closure`` (L-BFGS, Newton) get none: they evaluate the gradient themselves, several times per
    step, and use it as the true derivative of the loss (line search, curvature pairs, the Hessian's right-hand
    side); a centralized gradient is not that derivative, so the method would no longer be itself. A stacked base
    rule gets a centralized stacked rule: the mean is taken over each member's own rows.
    """
    if entry.info.closure is not None or entry.info.modifier:
        return

    def build(model, _factory=entry.factory, **hp):
        return centralize_gradients(_factory(model, **hp))

    stacked = centralized(entry.info.stacked) if entry.info.stacked else None

    registry.register(
        f"{entry.name}+gc",
        description=f"{entry.description} + gradient centralization",
        defaults=entry.defaults,
        search_space=entry.search_space,
        bounds=entry.bounds,
        check=entry.check,
        **{**dataclasses.asdict(entry.info), "modifier": "gc", "base": entry.name, "stacked": stacked},
    )(build)
