"""Lookahead (Zhang et al. 2019) as the paper defines it, on top of timm's implementation."""

from __future__ import annotations

import torch
from timm.optim import Lookahead


class PaperLookahead(Lookahead):
    """timm's Lookahead, made to follow the paper and to behave as a plain torch optimizer.

    timm creates a slow-weight buffer lazily at the first sync, from the fast weights of that moment, so its
    first sync is a no-op (φ = θ_k) where the paper has φ_0 = θ_0 and φ_1 = θ_0 + α(θ_k − θ_0); the initial
    weights are kept here to seed the buffers. timm also skips Optimizer.__init__, so its step is never wrapped by
    torch's hook machinery (registered step hooks, e.g. gradient centralization, would silently never run) and
    ``state`` is an empty dict separate from the inner optimizer's, where the moments and slow weights live.
    (state_dict hooks still cannot be registered here: state_dict() is the inner optimizer's.)
    """

    def __init__(self, base_optimizer, alpha, k):
        super().__init__(base_optimizer, alpha=alpha, k=k)
        # Not in the inner state yet: torch's Adam initializes a parameter's state only while it is empty.
        self._initial = {p: p.detach().clone() for group in self.param_groups for p in group["params"]}
        self.state = base_optimizer.state
        self._patch_step_function()

    @torch.no_grad()
    def update_slow(self, group):
        for p in group["params"]:
            state = self._base_optimizer.state[p]
            if p.grad is not None and "lookahead_slow_buff" not in state and p in self._initial:
                state["lookahead_slow_buff"] = self._initial.pop(p)
        super().update_slow(group)

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.state = self._base_optimizer.state  # the inner load replaced its state dict
        # A checkpoint taken before the first sync holds no slow buffers: seed them from the restored weights.
        self._initial = {p: p.detach().clone() for group in self.param_groups for p in group["params"]}
