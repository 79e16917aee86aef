"""Restarts within the budget of one run: fixed segments, a restart whenever validation loss plateaus, and
early abandoning of the restarts that start worst (successive halving)."""

from __future__ import annotations

import math

from lightning.pytorch.callbacks import EarlyStopping
from torch import nn

from techbench.checks import require
from techbench.techniques.restarts.common import (
    RESTARTS_CHECK,
    RESTARTS_SPACE,
    best_index,
    fit_epochs,
    loss_key,
    member,
    outcome,
)
from techbench.techniques.restarts.contract import RESTARTS

# --- restarts within one budget --------------------------------------------------------------------------------


@RESTARTS.register(
    "fixed_interval",
    description="the epoch budget split into `restarts` equal segments, a fresh init per segment; keep the best",
    defaults={"restarts": 4},
    search_space=RESTARTS_SPACE,
    check=require(RESTARTS_CHECK),
    kind="scheduling",
)
def fixed_interval(ctx, restarts):
    n = min(restarts, ctx.epochs)  # a segment is at least one epoch
    sizes = [ctx.epochs // n + (i < ctx.epochs % n) for i in range(n)]  # sum(sizes) == ctx.epochs
    models: dict[int, nn.Module] = {}
    for size in sorted(set(sizes), reverse=True):  # one fit_fresh per segment length
        indices = [i for i in range(n) if sizes[i] == size]
        models.update(zip(indices, ctx.fit_fresh(indices, size), strict=True))
    members = [member(ctx, models[i], sizes[i]) for i in range(n)]
    best = best_index(members)
    metrics = {"best_val_loss": members[best]["val_loss"], "segment_epochs": float(min(sizes))}
    return outcome(models[best], members, metrics)


class _PlateauStop(EarlyStopping):
    """Lightning's EarlyStopping on val/loss that does not stop before ``min_epochs`` epochs (as the Trainer's
    min_epochs would: the patience count goes on, the stop waits)."""

    def __init__(self, patience: int, min_epochs: int):
        super().__init__(monitor="val/loss", patience=patience, mode="min", strict=True, check_finite=True)
        self.min_epochs = min_epochs
        self.fired = False

    def _run_early_stopping_check(self, trainer) -> None:
        already = trainer.should_stop
        super()._run_early_stopping_check(trainer)
        if trainer.should_stop and not already:
            if trainer.current_epoch + 1 < self.min_epochs:
                trainer.should_stop = False
            else:
                self.fired = True


@RESTARTS.register(
    "on_plateau",
    description="train a fresh init until val loss plateaus (patience), restart with the remaining epochs; keep best",
    defaults={"patience": 3, "min_epochs": 2},
    search_space={"patience": {"low": 1, "high": 10}, "min_epochs": {"low": 1, "high": 10}},
    check=require(("min_epochs >= 1", lambda hp: hp["min_epochs"] >= 1)),
    kind="scheduling",
)
def on_plateau(ctx, patience, min_epochs):
    members, models, left = [], [], ctx.epochs
    while left > 0:
        i = len(models)
        model, stop = ctx.new_model(i), _PlateauStop(patience, min_epochs)
        run = max(fit_epochs(ctx.fit(model, left, index=i, callbacks=[stop])), 1)  # at least 1: always ends
        left -= run
        models.append(model)
        members.append(member(ctx, model, run, plateaued=stop.fired))
    best = best_index(members)
    metrics = {"restarts_made": float(len(models) - 1), "best_val_loss": members[best]["val_loss"]}
    return outcome(models[best], members, metrics)


@RESTARTS.register(
    "early_abandon",
    description="probe N fresh inits for a few epochs, continue only the top `keep` fraction to the full budget",
    defaults={"restarts": 8, "probe_epochs": 0, "keep": 0.5},
    search_space={**RESTARTS_SPACE, "probe_epochs": {"low": 1, "high": 10}, "keep": {"low": 0.1, "high": 0.9}},
    check=require(
        RESTARTS_CHECK,
        ("probe_epochs >= 0", lambda hp: hp["probe_epochs"] >= 0),
        ("0 < keep <= 1", lambda hp: 0 < hp["keep"] <= 1),
    ),
    kind="scheduling",
)
def early_abandon(ctx, restarts, probe_epochs, keep):
    spent_before = ctx.spent_epochs
    probe = min(probe_epochs or max(1, ctx.epochs // 5), ctx.epochs)
    models = ctx.fit_fresh(list(range(restarts)), probe)
    probes = [ctx.score(m)["val_loss"] for m in models]
    ranked = sorted(range(restarts), key=lambda i: (loss_key(probes[i]), i))
    kept = set(ranked[: max(1, math.ceil(keep * restarts))])
    members = []
    for i, model in enumerate(models):
        epochs = probe
        if i in kept and ctx.epochs > probe:  # continue: a new fit (fresh optimizer state) of the epochs left
            epochs += fit_epochs(ctx.fit(model, ctx.epochs - probe, index=i))
        members.append(member(ctx, model, epochs, accepted=i in kept, probe_val_loss=probes[i]))
    best = best_index(members)
    abandoned = [probes[i] for i in range(restarts) if i not in kept]
    metrics = {
        "compute_saved_frac": 1.0 - (ctx.spent_epochs - spent_before) / (restarts * ctx.epochs),
        "best_val_loss": members[best]["val_loss"],
        "abandoned_best_probe_val_loss": min(abandoned, key=loss_key) if abandoned else float("nan"),
        "kept_worst_probe_val_loss": max((probes[i] for i in kept), key=loss_key),
    }
    return outcome(models[best], members, metrics)
