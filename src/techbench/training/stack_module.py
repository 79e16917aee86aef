"""The LightningModule of a stack of K members (stacked.py): K models of one architecture, each with its own run
(seed, optimizer, schedule and penalty hyperparameters, dropout rate), trained at once.

Every member's parameters are one row of a (K, P) tensor, read through per-tensor views; the forward pass is a
batched matrix product for plain Sequential MLPs (with each member's dropout masks drawn from its own generator,
seeded as its sequential run's global stream would be, so a member sees its sequential run's masks) and vmap
otherwise. The cost is the sum of the members' mean losses plus each member's penalty on its own row
(stacked_objective.py), so each row receives exactly its own gradient; the optimizer (stacked_optim.py) applies each
member's own hyperparameters, decoupled decay and proximal step. A member stops alone: diverged (its cost
non-finite or above ``train.divergence_loss``, checked before the update as the sequential path does), or stopped by
an epoch hook (a pruned trial); its row is frozen from then on and its history ends with that epoch.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from techbench.specs import EffectiveRun
from techbench.training.module import LeanHooks, micro_batch_weight
from techbench.training.stacked_objective import StackedObjective
from techbench.training.stacked_optim import configure_stack
from techbench.workloads import loss_fn

EpochHook = Callable[["StackedModule", int, dict[str, torch.Tensor]], None]


class StackedModule(LeanHooks, L.LightningModule):
    def __init__(
        self,
        models: list[nn.Module],
        runs: list[EffectiveRun],
        generators: list | None = None,
        member_callbacks: list[list] | None = None,
    ):
        super().__init__()
        self.runs, self.k = runs, len(models)
        params, buffers = stack_module_state(models)
        self.names = list(params)
        self.segments, start = [], 0
        for p in params.values():
            self.segments.append((start, start + p[0].numel(), tuple(p.shape[1:])))
            start += p[0].numel()
        self.flat = nn.Parameter(torch.cat([p.detach().reshape(self.k, -1) for p in params.values()], 1))
        trains = dict(models[0].named_parameters())
        frozen = [
            torch.full((b - a,), not trains[n].requires_grad)
            for n, (a, b, _) in zip(self.names, self.segments, strict=True)
        ]
        # (P,) bool, the columns of parameters no member trains (a frozen source); None when every one trains
        self.frozen_columns = torch.cat(frozen) if any(bool(f.any()) for f in frozen) else None
        self.stacked_buffers = buffers
        self.objective = (
            StackedObjective.of(models, runs, self.segments, self.names, self.flat.shape[1]) if runs else None
        )
        self.base = [copy.deepcopy(models[0]).to("meta")]  # a list: not registered as a submodule
        self.plan = _sequential_plan(models) if not buffers else None
        self.generators = generators
        self.divergence_loss = float(runs[0].train["divergence_loss"]) if runs else float("inf")
        self.active = torch.ones(self.k, dtype=torch.bool)
        self.stop_epoch: list[int | None] = [None] * self.k  # the last epoch a member trained
        self.diverged_step: list[int | None] = [None] * self.k
        self.stop_reason: list[str | None] = [None] * self.k
        self.epoch_hooks: list[EpochHook] = []
        # Each member's stand-ins for its families' callbacks (stopping criteria, best weights): member_callbacks
        self.member_callbacks = member_callbacks or [[] for _ in models]
        self.history: list[dict[str, torch.Tensor]] = []  # per epoch: metric -> (K,) values
        self._sums: dict[str, torch.Tensor] = {}
        self._epoch_start = 0.0
        self.epoch_times: list[float] = []

    def _params(self) -> dict[str, torch.Tensor]:
        chunks = torch.split(self.flat, [b - a for a, b, _ in self.segments], dim=1)
        spans = zip(self.names, chunks, self.segments, strict=True)
        return {n: c.view(self.k, *shape) for n, c, (_, _, shape) in spans}

    def _forward(self, x: torch.Tensor, shared_input: bool) -> torch.Tensor:
        params = self._params()
        if self.plan is not None:
            return self._forward_sequential(params, x.expand(self.k, *x.shape) if shared_input else x)

        def one(p, buffers, xi):
            return functional_call(self.base[0], (p, buffers), (xi,))

        in_dims = (0, 0, None if shared_input else 0)
        return vmap(one, in_dims=in_dims, randomness="different")(params, self.stacked_buffers, x)

    def _forward_sequential(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Layers in a row (Flatten, Linear, Conv1d, activations, Dropout): batched matrix products on the stacked
        weights, and the K members' convolutions as one grouped convolution over (B, K·C, L), without vmap's
        per-call tracing. The same function per member."""
        h, grouped = x, False  # grouped: h is (B, K·C, L), the K members' channels side by side
        for op, arg in self.plan:
            if op == "conv1d":
                name, stride, padding = arg
                if not grouped:
                    h, grouped = h.transpose(0, 1).reshape(h.shape[1], -1, h.shape[-1]), True
                w, b = params[name + ".weight"], params[name + ".bias"]
                h = F.conv1d(h, w.reshape(-1, *w.shape[2:]), b.reshape(-1), stride, padding, groups=self.k)
                continue
            if grouped and op in ("flatten", "linear"):  # back to (K, B, features) for the head
                h, grouped = h.view(h.shape[0], self.k, -1).transpose(0, 1), False
                if op == "flatten":
                    continue
            if op == "flatten":
                h = h.flatten(2)
            elif op == "linear":
                h = torch.baddbmm(params[arg + ".bias"].unsqueeze(1), h, params[arg + ".weight"].transpose(1, 2))
            elif op == "dropout":
                h = self._dropout(h, arg) if self.training else h
            else:
                h = arg(h)
        return h

    def _dropout(self, h: torch.Tensor, rates: list[float]) -> torch.Tensor:
        """Inverted dropout with each member's rate; with generators, each member's mask is drawn as
        F.dropout would draw it in its sequential run (bernoulli(1 − p) / (1 − p) from the same stream)."""
        masks = []
        for i, p in enumerate(rates):
            if p == 0.0:
                masks.append(torch.ones_like(h[i]))
                continue
            stream = None if self.generators is None else self.generators[i]
            keep = torch.empty_like(h[i]).bernoulli_(1 - p, generator=stream)
            masks.append(keep.div_(1 - p) if p < 1 else keep)
        return h * torch.stack(masks)

    def configure_optimizers(self):
        return configure_stack(self, self.flat, self.segments, self.runs, self.objective, self.frozen_columns)

    def _losses(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k, b = logits.shape[:2]
        return loss_fn(logits.reshape(k * b, -1), y.reshape(-1), reduction="none").view(k, b).mean(1)

    def _count(self, stage: str, logits: torch.Tensor, y: torch.Tensor, losses: torch.Tensor) -> None:
        """Add a batch to the epoch sums of the members still training (a stopped member's sums stop growing)."""
        b, counted = logits.shape[1], self.active
        s, w = self._sums, counted.float()
        s[f"{stage}/loss"] = s.get(f"{stage}/loss", 0) + torch.where(counted, losses.detach() * b, 0.0)
        s[f"{stage}/correct"] = s.get(f"{stage}/correct", 0) + (logits.detach().argmax(-1) == y).sum(1).float() * w
        s[f"{stage}/n"] = s.get(f"{stage}/n", 0) + b * w

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self._forward(x, shared_input=False)
        losses = self._losses(logits, y)
        penalty = None if self.objective is None else self.objective.penalty(self.flat)
        cost = losses if penalty is None else losses + penalty  # the logged loss stays the data loss
        value = cost.detach()
        bad = self.active & ~(torch.isfinite(value) & (value <= self.divergence_loss))
        for i in bad.nonzero().flatten().tolist():  # skip the update, as a sequential run does, and stop there
            self.diverged_step[i] = int(self.global_step)
            self.stop(i, "diverged")
        self._count("train", logits, y, losses)
        return torch.where(self.active, cost, 0.0).sum() * micro_batch_weight(
            self.trainer, self.runs[0], batch_idx, y.shape[-1]
        )

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits, y = self._forward(x, shared_input=True), y.expand(self.k, -1)
        self._count("val", logits, y, self._losses(logits, y))

    def stop(self, member: int, reason: str) -> None:
        """Freeze ``member`` from now on; its history ends with the current epoch."""
        if self.stop_epoch[member] is None:
            self.stop_epoch[member], self.stop_reason[member] = int(self.current_epoch), reason
            self.active[member] = False
            if self._trainer is not None and self.trainer.optimizers:
                self.trainer.optimizers[0].active[member] = False
        if not bool(self.active.any()):
            self.trainer.should_stop = True

    def on_train_epoch_start(self):
        self._sums = {}
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self):
        seconds = time.perf_counter() - self._epoch_start
        self.epoch_times.append(seconds)
        s = self._sums
        epoch = {m: s[f"{st}/{q}"] / s[f"{st}/n"] for st in ("train", "val") if f"{st}/n" in s for m, q in _pairs(st)}
        epoch["lr"] = self.trainer.optimizers[0].current_lr.float()
        epoch["time/epoch_s"] = torch.full((self.k,), seconds / self.k)  # the stack's time, amortized per member
        self.history.append({m: v.detach().cpu() for m, v in epoch.items()})
        self._sums = {}
        self._member_checks(int(self.current_epoch))
        for hook in self.epoch_hooks:
            hook(self, int(self.current_epoch), self.history[-1])

    def _member_checks(self, epoch: int) -> None:
        """Each training member's callbacks see its epoch, as a run's callbacks see it after validation (every one of
        them, even once one has decided to stop); a member whose callback says stop is stopped alone."""
        for i in self.active.nonzero().flatten().tolist():
            values = {m: float(v[i]) for m, v in self.history[-1].items()}
            said = [
                cb.on_member_epoch(epoch, values, lambda i=i: self.member_state(i)) for cb in self.member_callbacks[i]
            ]
            if any(said):
                self.stop(i, "early_stopped")

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        """Member ``i``'s weights now, with the state-dict keys of the single executor's module (``model.…``)."""
        state = {f"model.{n}": p[i].detach().clone() for n, p in self._params().items()}
        return state | {f"model.{n}": b[i].clone() for n, b in self.stacked_buffers.items()}

    def member_history(self, i: int) -> dict[str, list[float]]:
        """Member ``i``'s per-epoch values up to the epoch it stopped in (a member that diverged has, like its
        sequential run, no validation values for that epoch: it was no longer counted)."""
        end = len(self.history) if self.stop_epoch[i] is None else self.stop_epoch[i] + 1
        return {m: [float(epoch[m][i]) for epoch in self.history[:end]] for m in (self.history or [{}])[0]}

    def unstacked(self, models: list[nn.Module]) -> list[nn.Module]:
        """The K trained models, as ordinary modules (copies of ``models`` with the stacked weights)."""
        out = []
        params = self._params()
        for i, m in enumerate(models):
            m = copy.deepcopy(m)
            state = {n: p[i].detach().clone() for n, p in params.items()}
            state.update({n: b[i].clone() for n, b in self.stacked_buffers.items()})
            m.load_state_dict(state)
            out.append(m)
        return out


def _sequential_plan(models: list[nn.Module]) -> list[tuple[str, Any]] | None:
    """[(op, argument)] for members made of Flatten / Linear / Conv1d (with bias) / activation / Dropout layers
    in a row: an nn.Sequential (the MLP and logistic-regression shapes) or a model that lists its layers in
    forward order (``layers()``, the 1-D CNN); a dropout's argument is its rate in each member. None for anything
    else (those go through vmap)."""
    if all(isinstance(m, nn.Sequential) for m in models):
        named = [list(m.named_children()) for m in models]
    elif all(hasattr(m, "layers") for m in models):
        named = [m.layers() for m in models]
    else:
        return None
    plan: list[tuple[str, Any]] = []
    for i, (name, layer) in enumerate(named[0]):
        convolved = any(op == "conv1d" for op, _ in plan) and not any(op == "flatten" for op, _ in plan)
        if type(layer) is nn.Dropout and convolved:
            return None  # dropout between convolutions: vmap draws it
        if isinstance(layer, nn.Flatten) and layer.start_dim == 1 and layer.end_dim == -1:
            plan.append(("flatten", None))
        elif type(layer) is nn.Linear and layer.bias is not None:
            plan.append(("linear", name))
        elif type(layer) is nn.Conv1d and layer.bias is not None and layer.groups == 1 and layer.dilation == (1,):
            if not isinstance(layer.padding, tuple):
                return None
            plan.append(("conv1d", (name, layer.stride[0], layer.padding[0])))
        elif type(layer) in (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU):
            plan.append(("activation", layer))
        elif type(layer) is nn.Dropout:
            plan.append(("dropout", [float(layers[i][1].p) for layers in named]))
        else:
            return None
    return plan


def _pairs(stage: str) -> list[tuple[str, str]]:
    return [(f"{stage}/loss", "loss"), (f"{stage}/acc", "correct")]
