"""Learning-rate schedules, from the chapter's formulas ("Learning Rate Selection").

Each entry is a factory ``(optimizer, *, epochs, steps_per_epoch, **hp) -> dict | None`` that returns a Lightning
lr-scheduler config ``{"scheduler", "interval", "frequency"[, "monitor"]}`` (None: the LR stays constant), and
declares (ScheduleInfo) ``lr_at``: the chapter's formula as a pure function ``lr_at(t, base_lr, total_steps,
steps_per_epoch, **hp)`` of the update index t (the LR that update t uses), which the tests hold torch to, or
``monitor``: the validation metric a schedule with no such formula reacts to.

Every schedule but plateau steps once per optimizer update, so its shape over the run is the same at any batch
size; periods and rates are given per epoch and converted here. ``steps_per_epoch`` must count optimizer updates
(after gradient accumulation). The base LR α₀ is the optimizer's lr: a schedule only shapes it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import lr_scheduler as sched

from techbench.checks import require
from techbench.registry import Info, Registry, build
from techbench.techniques.family import Family
from techbench.techniques.schedule_formulas import (
    cosine_lr,
    cosine_restarts_lr,
    exponential_lr,
    inverse_time_factor,
    inverse_time_lr,
    one_cycle_lr,
    one_cycle_pct,
    step_lr,
    step_period,
    warmup_cosine_lr,
    warmup_steps,
)


@dataclass(frozen=True)
class ScheduleInfo(Info):
    lr_at: Callable[..., float] | None = None
    monitor: str | None = None  # a schedule driven by a validation metric (one value per seed)


SCHEDULES = Registry("schedule", ScheduleInfo)


def build_schedule(spec: dict, optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int) -> dict | None:
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError(f"a schedule needs epochs >= 1 and steps_per_epoch >= 1, got {epochs}, {steps_per_epoch}")
    return build(SCHEDULES, spec, optimizer, epochs=int(epochs), steps_per_epoch=int(steps_per_epoch))


class ScheduleFamily(Family):
    def build(self, spec: dict[str, Any], optimizer, *, epochs: int, steps_per_epoch: int) -> dict | None:
        return build_schedule(spec, optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch)

    def unstackable(self, spec: dict[str, Any], config: dict[str, Any]) -> str | None:
        monitor = self.entry(spec).info.monitor
        return None if monitor is None else f"schedule {spec['name']} (one {monitor} per seed)"


FAMILY = ScheduleFamily(
    "schedule",
    SCHEDULES,
    default={"name": "constant"},
    description="how the learning rate changes over a run (Learning Rate Selection)",
)


def _config(scheduler, interval: str = "step", **extra) -> dict:
    return {"scheduler": scheduler, "interval": interval, "frequency": 1, **extra}


# --- constant -------------------------------------------------------------------------------------------------


@SCHEDULES.register(
    "constant",
    description="fixed learning rate α_t = α₀ (no scheduler)",
    lr_at=lambda t, base_lr, total_steps, steps_per_epoch: base_lr,
)
def constant(optimizer, *, epochs, steps_per_epoch):
    return None


# --- step decay: α₀·γ^⌊t/s⌋ ----------------------------------------------------------------------------------


@SCHEDULES.register(
    "step",
    description="step decay α₀·γ^⌊t/s⌋, s = step_epochs (0: a third of the run, so the LR drops twice by γ)",
    defaults={"gamma": 0.1, "step_epochs": 0},
    search_space={"gamma": {"low": 0.05, "high": 0.5, "log": True}},
    lr_at=step_lr,
    check=require(("step_epochs >= 0", lambda hp: hp["step_epochs"] >= 0)),
)
def step(optimizer, *, epochs, steps_per_epoch, gamma, step_epochs):
    s = step_period(step_epochs, epochs * steps_per_epoch, steps_per_epoch)
    return _config(sched.StepLR(optimizer, step_size=s, gamma=gamma))


# --- exponential decay: α₀·e^{−kt} -----------------------------------------------------------------------------


@SCHEDULES.register(
    "exponential",
    description="exponential decay α₀·e^{−k·t/N}: k per epoch (N updates), torch's per-update gamma = e^{−k/N}",
    defaults={"k": 0.2},  # e^{-4} ≈ 2% of α₀ after 20 epochs, near step decay's γ² = 1%
    search_space={"k": {"low": 0.02, "high": 1.0, "log": True}},
    lr_at=exponential_lr,
    check=require(("k >= 0", lambda hp: hp["k"] >= 0)),
)
def exponential(optimizer, *, epochs, steps_per_epoch, k):
    # ExponentialLR multiplies by gamma once per step: α₀·gamma^t = α₀·e^{−k t/N} for gamma = e^{−k/N}.
    return _config(sched.ExponentialLR(optimizer, gamma=math.exp(-k / steps_per_epoch)))


# --- 1/t decay: α₀/(1 + kt) ------------------------------------------------------------------------------------


@SCHEDULES.register(
    "inverse_time",
    description="1/t decay α₀/(1 + k·t/N): k per epoch (N updates), i.e. the chapter's per-update k is k/N",
    defaults={"k": 0.5},  # halves the LR after 2 epochs, α₀/11 after 20
    search_space={"k": {"low": 0.05, "high": 5.0, "log": True}},
    lr_at=inverse_time_lr,
    check=require(("k >= 0", lambda hp: hp["k"] >= 0)),
)
def inverse_time(optimizer, *, epochs, steps_per_epoch, k):
    # torch has no 1/t class; a partial (not a lambda) keeps the scheduler picklable for spawned workers.
    factor = functools.partial(inverse_time_factor, k=k, steps_per_epoch=steps_per_epoch)
    return _config(sched.LambdaLR(optimizer, factor))


# --- cosine annealing: α_min + ½(α₀ − α_min)(1 + cos(πt/T)) -----------------------------------------------------


@SCHEDULES.register(
    "cosine",
    description="cosine annealing α_min + ½(α₀ − α_min)(1 + cos(πt/T)), T = all updates of the run",
    defaults={"min_lr": 0.0},
    search_space={"min_lr": {"low": 0.0, "high": 1e-3}},
    lr_at=cosine_lr,
)
def cosine(optimizer, *, epochs, steps_per_epoch, min_lr):
    return _config(sched.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch, eta_min=min_lr))


# --- linear warmup, then cosine --------------------------------------------------------------------------------


@SCHEDULES.register(
    "warmup_cosine",
    description="linear warmup α₀·(t+1)/(W+1) over warmup_epochs, then cosine annealing to min_lr",
    # The chapter's example warms up for 10% of the updates: 2 epochs of the default 20-epoch run.
    defaults={"warmup_epochs": 2.0, "min_lr": 0.0},
    search_space={"warmup_epochs": {"low": 0.0, "high": 5.0}},
    lr_at=warmup_cosine_lr,
)
def warmup_cosine(optimizer, *, epochs, steps_per_epoch, warmup_epochs, min_lr):
    total = epochs * steps_per_epoch
    w = warmup_steps(warmup_epochs, total, steps_per_epoch)
    if w == 0:
        return _config(sched.CosineAnnealingLR(optimizer, T_max=total, eta_min=min_lr))
    # LinearLR cannot start at 0; a start factor of 1/(W+1) gives the ramp from 0 without an update at LR 0.
    warm = sched.LinearLR(optimizer, start_factor=1.0 / (w + 1), end_factor=1.0, total_iters=w)
    cool = sched.CosineAnnealingLR(optimizer, T_max=total - w, eta_min=min_lr)
    return _config(sched.SequentialLR(optimizer, [warm, cool], milestones=[w]))


# --- one-cycle (Smith 2018), as torch.optim.lr_scheduler.OneCycleLR defines it ------------------------------


@SCHEDULES.register(
    "one_cycle",
    description="one-cycle: cosine up from peak/div_factor to peak = max_lr_mult·α₀ over pct_start of the run, "
    "then down to peak/div_factor/final_div_factor (torch OneCycleLR, LR only)",
    # torch's defaults; max_lr_mult = 1 makes the optimizer's lr the peak (fastai's lr_max convention).
    defaults={"max_lr_mult": 1.0, "pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4},
    search_space={"max_lr_mult": {"low": 0.3, "high": 10.0, "log": True}, "pct_start": {"low": 0.1, "high": 0.5}},
    lr_at=one_cycle_lr,
    check=require(
        ("0 < pct_start < 1", lambda hp: 0.0 < hp["pct_start"] < 1.0),
        ("positive factors", lambda hp: min(hp["max_lr_mult"], hp["div_factor"], hp["final_div_factor"]) > 0),
    ),
)
def one_cycle(optimizer, *, epochs, steps_per_epoch, max_lr_mult, pct_start, div_factor, final_div_factor):
    total = epochs * steps_per_epoch
    peaks = [g["lr"] * max_lr_mult for g in optimizer.param_groups]
    # cycle_momentum off: torch would also cycle momentum/β₁ (0.95 → 0.85), which would turn plain SGD into
    # momentum SGD; a schedule study varies the LR alone.
    scheduler = sched.OneCycleLR(
        optimizer,
        max_lr=peaks,
        total_steps=total,
        pct_start=one_cycle_pct(pct_start, total),
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        cycle_momentum=False,
    )
    return _config(scheduler)


# --- cosine with warm restarts (SGDR, Loshchilov & Hutter 2017) ------------------------------------------------


@SCHEDULES.register(
    "cosine_restarts",
    description="SGDR: cosine from α₀ to min_lr over T_i updates, then back to α₀; T_0 = period_epochs, "
    "T_i = T_0·period_mult^i (1: the chapter's fixed cycle length T)",
    defaults={"period_epochs": 5, "period_mult": 1, "min_lr": 0.0},
    search_space={"period_epochs": {"low": 1, "high": 10}, "period_mult": {"choices": [1, 2]}},
    lr_at=cosine_restarts_lr,
    check=require(
        ("period_epochs >= 1", lambda hp: hp["period_epochs"] >= 1),
        ("period_mult >= 1", lambda hp: hp["period_mult"] >= 1),
    ),
)
def cosine_restarts(optimizer, *, epochs, steps_per_epoch, period_epochs, period_mult, min_lr):
    # The chapter writes α_min + ½(α_max − α_min)(1 + cos(2π·mod(t, T)/T)), which climbs back to α_max smoothly
    # over each cycle's second half; SGDR (torch's class) anneals over the whole cycle and then jumps back.
    scheduler = sched.CosineAnnealingWarmRestarts(
        optimizer, T_0=max(1, int(period_epochs) * steps_per_epoch), T_mult=int(period_mult), eta_min=min_lr
    )
    return _config(scheduler)


# --- reduce on plateau -----------------------------------------------------------------------------------------


@SCHEDULES.register(
    "plateau",
    description="reduce on plateau: LR ← max(γ·LR, min_lr) once val/loss has not improved for more than "
    "`patience` epochs (torch: by a relative 1e-4)",
    # γ = 0.1 as torch and the chapter's step decay; patience 10 (torch) is half a 20-epoch run, so 3.
    defaults={"gamma": 0.1, "patience": 3, "min_lr": 0.0},
    search_space={"gamma": {"low": 0.1, "high": 0.7}, "patience": {"low": 1, "high": 10}},
    # No pure function of t: when the LR drops depends on the validation losses the run produces.
    monitor="val/loss",
    bounds={"patience": (0, None, True, True)},  # torch's patience 0: drop after the first epoch without a gain
    check=require(("gamma < 1", lambda hp: hp["gamma"] < 1.0)),
)
def plateau(optimizer, *, epochs, steps_per_epoch, gamma, patience, min_lr):
    scheduler = sched.ReduceLROnPlateau(optimizer, mode="min", factor=gamma, patience=patience, min_lr=min_lr)
    return _config(scheduler, interval="epoch", monitor="val/loss")
