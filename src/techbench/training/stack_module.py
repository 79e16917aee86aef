"""The LightningModule of a stack of K seeds (the stacked executor, stacked.py): stacked parameters, a vmap'd
forward pass (or batched matrix products for plain Sequential MLPs), the sum of the per-seed mean losses, and
per-seed epoch sums of loss and accuracy."""

from __future__ import annotations

import copy
import time
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from techbench.specs import EffectiveRun
from techbench.training.module import configure
from techbench.workloads import loss_fn


class StackedModule(L.LightningModule):
    def __init__(self, models: list[nn.Module], run: EffectiveRun):
        super().__init__()
        self.run = run
        self.k = len(models)
        params, buffers = stack_module_state(models)
        self.names = list(params)
        # ParameterDict keys may not contain dots; the stacked tensors keep the module's own names in self.names.
        self.stack = nn.ParameterDict({n.replace(".", "/"): nn.Parameter(p) for n, p in params.items()})
        self.stacked_buffers = buffers
        self.base = [copy.deepcopy(models[0]).to("meta")]  # a list: not registered as a submodule
        self.plan = _sequential_plan(models[0]) if not buffers else None
        self.history: list[dict[str, torch.Tensor]] = []  # per epoch: metric -> (K,) values
        self._sums: dict[str, torch.Tensor] = {}
        self._epoch_start = 0.0
        self.epoch_times: list[float] = []

    def _params(self) -> dict[str, torch.Tensor]:
        return {n: self.stack[n.replace(".", "/")] for n in self.names}

    def _forward(self, x: torch.Tensor, shared_input: bool) -> torch.Tensor:
        if self.plan is not None:
            return self._forward_sequential(x.expand(self.k, *x.shape) if shared_input else x)

        def one(params, buffers, xi):
            return functional_call(self.base[0], (params, buffers), (xi,))

        in_dims = (0, 0, None if shared_input else 0)
        return vmap(one, in_dims=in_dims, randomness="different")(self._params(), self.stacked_buffers, x)

    def _forward_sequential(self, x: torch.Tensor) -> torch.Tensor:
        """The fast path for plain nn.Sequential stacks (Flatten, Linear, activations, Dropout): batched
        matrix products on the stacked weights, without vmap's per-call tracing. The same function per seed."""
        h = x
        for op, arg in self.plan:
            if op == "flatten":
                h = h.flatten(2)
            elif op == "linear":
                w, b = self.stack[arg + "/weight"], self.stack[arg + "/bias"]
                h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            elif op == "dropout":
                h = F.dropout(h, arg, self.training)  # elementwise masks: independent across seeds
            else:
                h = arg(h)
        return h

    def configure_optimizers(self):
        configured = configure(self, self, self.run)
        optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
        if type(optimizer) in (torch.optim.Adam, torch.optim.AdamW):
            # One fused kernel over the few large stacked tensors instead of ~10 passes each: the same update.
            for group in optimizer.param_groups:
                group.update(fused=True, foreach=False)
        return configured

    def _add(self, stage: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-seed mean losses (K,) of a batch, accumulated as per-seed sums for the epoch."""
        k, b = logits.shape[:2]
        losses = loss_fn(logits.reshape(k * b, -1), y.reshape(-1), reduction="none").view(k, b)
        correct = (logits.detach().argmax(-1) == y).sum(1).float()
        s = self._sums
        s[f"{stage}/loss"] = s.get(f"{stage}/loss", 0) + losses.detach().sum(1)
        s[f"{stage}/correct"] = s.get(f"{stage}/correct", 0) + correct
        s[f"{stage}/n"] = s.get(f"{stage}/n", 0) + b
        return losses.mean(1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self._add("train", self._forward(x, shared_input=False), y).sum()

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self._add("val", self._forward(x, shared_input=True), y.expand(self.k, -1))

    def on_train_epoch_start(self):
        self._sums = {}
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self):
        seconds = time.perf_counter() - self._epoch_start
        self.epoch_times.append(seconds)
        s = self._sums
        epoch = {m: s[f"{st}/{q}"] / s[f"{st}/n"] for st in ("train", "val") if f"{st}/n" in s for m, q in _pairs(st)}
        epoch["lr"] = torch.full((self.k,), self.trainer.optimizers[0].param_groups[0]["lr"])
        epoch["time/epoch_s"] = torch.full((self.k,), seconds / self.k)  # the stack's time, amortized per seed
        self.history.append({m: v.detach().cpu() for m, v in epoch.items()})
        self._sums = {}

    def unstacked(self, models: list[nn.Module]) -> list[nn.Module]:
        """The K trained models, as ordinary modules (copies of ``models`` with the stacked weights)."""
        out = []
        for i, m in enumerate(models):
            m = copy.deepcopy(m)
            state = {n: p[i].detach().clone() for n, p in self._params().items()}
            state.update({n: b[i].clone() for n, b in self.stacked_buffers.items()})
            m.load_state_dict(state)
            out.append(m)
        return out


def _sequential_plan(model: nn.Module) -> list[tuple[str, Any]] | None:
    """[(op, argument)] for an nn.Sequential of Flatten / Linear (with bias) / activation / Dropout layers, the
    MLP and logistic-regression shapes; None for anything else (those go through vmap)."""
    if not isinstance(model, nn.Sequential):
        return None
    plan: list[tuple[str, Any]] = []
    for name, layer in model.named_children():
        if isinstance(layer, nn.Flatten) and layer.start_dim == 1 and layer.end_dim == -1:
            plan.append(("flatten", None))
        elif type(layer) is nn.Linear and layer.bias is not None:
            plan.append(("linear", name))
        elif type(layer) in (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU):
            plan.append(("activation", layer))
        elif type(layer) is nn.Dropout:
            plan.append(("dropout", layer.p))
        else:
            return None
    return plan


def _pairs(stage: str) -> list[tuple[str, str]]:
    return [(f"{stage}/loss", "loss"), (f"{stage}/acc", "correct")]
