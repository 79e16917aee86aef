"""Every optimizer entry with a stacked rule updates each member of a stack exactly as its own torch/timm optimizer
updates that member alone, with each member's own hyperparameters (registry-parametrized: a new entry with a
stacked rule is tested here without a line of test code)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from techbench.registry import hyperparameters
from techbench.techniques import OPTIMIZERS
from techbench.training.stacked_optim import StackedOptimizer, member_hyperparameters

STACKED = [n for n in OPTIMIZERS.names() if OPTIMIZERS.get(n).info.stacked is not None]
K, STEPS = 3, 12


def _member_specs(name: str) -> list[dict]:
    """K specs of the entry: its defaults, then points spread over its search space (lr at its low/high end)."""
    entry = OPTIMIZERS.get(name)
    specs = []
    for i in range(K):
        spec = {"name": name}
        for key, dim in entry.search_space.items():
            if "choices" in dim:
                spec[key] = dim["choices"][i % len(dim["choices"])]
            elif i:
                lo, hi = dim["low"], dim["high"]
                frac = 0.25 if i == 1 else 0.75
                value = lo * (hi / lo) ** frac if dim.get("log") else lo + (hi - lo) * frac
                spec[key] = round(value) if isinstance(lo, int) and isinstance(hi, int) else value
        specs.append(spec)
    return specs


class _Run(dict):
    """The part of an EffectiveRun the stacked optimizer reads: run["optimizer"]."""


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))


@pytest.mark.parametrize("shared", [False, True], ids=["own-hyperparameters", "shared-hyperparameters"])
@pytest.mark.parametrize("name", STACKED)
def test_each_member_follows_its_own_optimizer(name, shared):
    """Spread over the search space (per-member columns), or all at the defaults (the seeds of one run: shared
    hyperparameters are plain floats)."""
    specs = [{"name": name}] * K if shared else _member_specs(name)
    alone = [_model(i) for i in range(K)]
    stacked = [_model(i) for i in range(K)]
    entry = OPTIMIZERS.get(name)
    optimizers = [entry.factory(m, **hyperparameters(entry, s)) for m, s in zip(alone, specs, strict=True)]
    rule, hp = member_hyperparameters([_Run(optimizer=s) for s in specs])
    segments, start = [], 0
    for p in stacked[0].parameters():
        segments.append((start, start + p.numel(), tuple(p.shape)))
        start += p.numel()
    flat = nn.Parameter(torch.stack([torch.cat([p.detach().flatten() for p in m.parameters()]) for m in stacked]))
    lrs = torch.tensor([[float(hyperparameters(OPTIMIZERS.get(name), s)["lr"]) for s in specs]] * (STEPS + 1))
    stack = StackedOptimizer(flat, segments, rule, hp, lrs.double())
    torch.manual_seed(100)
    for _ in range(STEPS):
        grads = torch.randn(K, start)
        for i, (m, opt) in enumerate(zip(alone, optimizers, strict=True)):
            for p, (a, b, _) in zip(m.parameters(), segments, strict=True):
                p.grad = grads[i, a:b].view_as(p).clone()
            opt.step()
        flat.grad = grads.clone()
        stack.step()
    for i, m in enumerate(alone):
        expected = torch.cat([p.detach().flatten() for p in m.parameters()])
        torch.testing.assert_close(flat.detach()[i], expected, rtol=1e-5, atol=1e-6, msg=f"{name} member {i}")


def test_a_stopped_member_keeps_its_weights():
    rule, hp = member_hyperparameters([_Run(optimizer={"name": "adam"})] * 2)
    flat = nn.Parameter(torch.ones(2, 4))
    stack = StackedOptimizer(flat, [(0, 4, (4,))], rule, hp, torch.full((3, 2), 0.1, dtype=torch.float64))
    stack.active[1] = False
    flat.grad = torch.ones(2, 4)
    stack.step()
    assert torch.equal(flat.detach()[1], torch.ones(4)) and not torch.equal(flat.detach()[0], torch.ones(4))


def test_members_must_share_one_stackable_optimizer():
    with pytest.raises(ValueError, match="one optimizer"):
        member_hyperparameters([_Run(optimizer={"name": "adam"}), _Run(optimizer={"name": "sgd"})])
    with pytest.raises(ValueError, match="no stacked update rule"):
        member_hyperparameters([_Run(optimizer={"name": "lbfgs"})])
