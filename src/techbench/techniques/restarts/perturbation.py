"""Perturbation search: perturb a trained solution, retrain it briefly and accept it by a rule (an improvement,
or the Metropolis rule at a temperature)."""

from __future__ import annotations

import copy
import itertools
import math
import random
from collections.abc import Callable
from typing import Any

from torch import nn

from techbench.checks import require
from techbench.techniques.restarts.common import (
    EPOCHS_PER_RESTART_CHECK,
    EPOCHS_PER_RESTART_SPACE,
    RESTARTS_CHECK,
    RESTARTS_SPACE,
    fit_epochs,
    loss_key,
    member,
    outcome,
    perturb_,
    reinit_last_,
)
from techbench.techniques.restarts.contract import RESTARTS, RestartContext, RestartOutcome

# --- perturbation search ---------------------------------------------------------------------------------------


def _local_search(
    ctx: RestartContext,
    restarts: int,
    epochs_per_restart: int,
    perturb: Callable[[nn.Module, int], Any],
    temperature: float = 0.0,
) -> RestartOutcome:
    """Train one solution for the budget, then ``restarts`` times: perturb the current solution (perturb(model,
    i) under member i's seed), retrain it for epochs_per_restart (0: a quarter of the budget) and accept it by
    the Metropolis rule at ``temperature`` (0: only an improvement). The best solution seen is kept.

    With temperature 0 the current solution is always the best one, so this is iterated local search."""
    epochs = epochs_per_restart or max(1, ctx.epochs // 4)
    current = ctx.new_model(0)
    first = member(ctx, current, fit_epochs(ctx.fit(current, index=0)), accepted=1.0)
    members, best, best_loss = [first], current, first["val_loss"]
    current_loss = first["val_loss"]
    rng = random.Random(ctx.member_seed(0))  # the Metropolis draws: apart from every training stream
    for i in range(1, restarts + 1):
        candidate = copy.deepcopy(current)
        perturb(candidate, i)
        record = member(ctx, candidate, fit_epochs(ctx.fit(candidate, epochs, index=i)))
        delta = record["val_loss"] - current_loss  # NaN (diverged) compares false: rejected
        accepted = delta < 0 or (temperature > 0 and delta >= 0 and rng.random() < math.exp(-delta / temperature))
        record["accepted"] = float(accepted)
        members.append(record)
        if accepted:
            current, current_loss = candidate, record["val_loss"]
            if loss_key(current_loss) < loss_key(best_loss):
                best, best_loss = candidate, current_loss
    trials = [m["accepted"] for m in members[1:]]
    metrics = {
        "accept_rate": sum(trials) / len(trials) if trials else float("nan"),
        "best_val_loss": best_loss,
        "first_val_loss": first["val_loss"],
    }
    running = list(itertools.accumulate((m["val_loss"] for m in members), lambda a, b: min(a, b, key=loss_key)))
    return outcome(best, members, metrics, {"best_val_loss": running})


@RESTARTS.register(
    "iterated_local_search",
    description="iterated local search: θ_best + ε·n, retrain briefly, keep if val loss improves; ε ← ε·eps_decay",
    defaults={"restarts": 8, "eps": 0.05, "eps_decay": 0.7, "epochs_per_restart": 0},
    search_space={
        **RESTARTS_SPACE,
        "eps": {"low": 0.005, "high": 0.5, "log": True},
        "eps_decay": {"low": 0.3, "high": 1.0},
        **EPOCHS_PER_RESTART_SPACE,
    },
    check=require(RESTARTS_CHECK, EPOCHS_PER_RESTART_CHECK, ("eps_decay > 0", lambda hp: hp["eps_decay"] > 0)),
    kind="perturbation",
)
def iterated_local_search(ctx, restarts, eps, eps_decay, epochs_per_restart):
    return _local_search(
        ctx, restarts, epochs_per_restart, lambda m, i: perturb_(m, ctx.member_seed(i), eps * eps_decay ** (i - 1))
    )


@RESTARTS.register(
    "basin_hopping",
    description="basin hopping: perturb the current solution, retrain, accept by Metropolis at temperature T",
    defaults={"restarts": 8, "eps": 0.05, "temperature": 0.05, "epochs_per_restart": 0},
    search_space={
        **RESTARTS_SPACE,
        "eps": {"low": 0.005, "high": 0.5, "log": True},
        "temperature": {"low": 1e-3, "high": 1.0, "log": True},
        **EPOCHS_PER_RESTART_SPACE,
    },
    check=require(RESTARTS_CHECK, EPOCHS_PER_RESTART_CHECK),
    kind="perturbation",
)
def basin_hopping(ctx, restarts, eps, temperature, epochs_per_restart):
    return _local_search(
        ctx, restarts, epochs_per_restart, lambda m, i: perturb_(m, ctx.member_seed(i), eps), temperature
    )


@RESTARTS.register(
    "selective_perturbation",
    description="iterated local search with noise proportional to |w|: θ_best + scale·|θ_best|·n",
    defaults={"restarts": 8, "scale": 0.3, "epochs_per_restart": 0},
    search_space={**RESTARTS_SPACE, "scale": {"low": 0.05, "high": 1.0, "log": True}, **EPOCHS_PER_RESTART_SPACE},
    check=require(RESTARTS_CHECK, EPOCHS_PER_RESTART_CHECK, ("scale >= 0", lambda hp: hp["scale"] >= 0)),
    kind="perturbation",
)
def selective_perturbation(ctx, restarts, scale, epochs_per_restart):
    return _local_search(
        ctx, restarts, epochs_per_restart, lambda m, i: perturb_(m, ctx.member_seed(i), scale, relative=True)
    )


@RESTARTS.register(
    "partial_reinit",
    description="re-initialize the last `layers` Linear/Conv layers of the best solution, retrain, keep if better",
    defaults={"restarts": 4, "layers": 1, "epochs_per_restart": 0},
    search_space={**RESTARTS_SPACE, "layers": {"low": 1, "high": 3}, **EPOCHS_PER_RESTART_SPACE},
    check=require(RESTARTS_CHECK, EPOCHS_PER_RESTART_CHECK, ("layers >= 1", lambda hp: hp["layers"] >= 1)),
    kind="perturbation",
)
def partial_reinit(ctx, restarts, layers, epochs_per_restart):
    return _local_search(ctx, restarts, epochs_per_restart, lambda m, i: reinit_last_(m, layers, ctx.member_seed(i)))
