"""Batch regimes ("Batch vs. Stochastic Gradient Descent"): how many examples each update sees.

Each entry is a config transform ``(config, n_train, **hp) -> config`` applied to a run's config (the
family's ``resolve`` hook) before training: it sets train.batch_size, train.accumulate_grad_batches and, for
the large-batch rules, the optimizer or its learning rate. The study's ``train.batch_size`` is the reference
batch B₀ of the scaling rules, and ``epochs: 0`` keeps the study's epoch budget (full batch needs many more
epochs: one update each). The fixed-size regimes take an ``lr`` (0 = the base optimizer's own) that tuning
searches per batch size: a batch size compared at one learning rate tuned for another measures the mismatch,
not the batch size. The scaling rules set their learning rate by the rule they test.
"""

from __future__ import annotations

import copy
from typing import Any

from techbench.registry import Registry, build
from techbench.techniques.family import Column, Family
from techbench.techniques.optimizers import OPTIMIZERS, lr_around

BATCHING = Registry("batching")
KEEP_EPOCHS = {"epochs": (0, None, True, True)}  # 0 = the study's epoch budget
OWN_LR = {"lr": (0.0, None, True, True)}  # 0 = the base optimizer's learning rate, unchanged
# Four decades around SGD's and momentum's default 0.01 (the study's base optimizer), as the optimizers search.
LR_PER_BATCH = {"lr": lr_around(0.01)}
FIXED = {"defaults": {"epochs": 0, "lr": 0.0}, "bounds": {**KEEP_EPOCHS, **OWN_LR}, "search_space": LR_PER_BATCH}


def apply_batching(spec: dict[str, Any], config: dict[str, Any], n_train: int) -> dict[str, Any]:
    """The run config with the batching regime ``spec`` (and a full-batch optimizer's batch size) applied."""
    out = build(BATCHING, spec, copy.deepcopy(config), n_train)
    if OPTIMIZERS.get(out["optimizer"]["name"]).info.full_batch:
        # L-BFGS and Newton are full-batch methods: their line search / Hessian assume the exact loss.
        out["train"]["batch_size"] = n_train
    return out


class BatchingFamily(Family):
    def resolve(self, spec: dict[str, Any], config: dict[str, Any], n_train: int) -> dict[str, Any]:
        return apply_batching(spec, config, n_train)

    def unstackable(self, spec: dict[str, Any], config: dict[str, Any]) -> str | None:
        return None  # a regime only sets batch size, accumulation and the optimizer: the stack takes them as set


FAMILY = BatchingFamily(
    "batching",
    BATCHING,
    default={"name": "default"},
    description="how many examples each update sees (Batch vs. Stochastic Gradient Descent)",
    columns=(
        Column("updates_to_target", "updates to target", 1, 0),
        Column("throughput/samples_per_s", "throughput samples/s", 1, 0),
        Column("memory/step_mb", "peak step memory MB", 1, 2),
        Column("effective_batch", "batch", 1, 0),
        Column("epochs_run", "epochs run", 1, 0),
        Column("updates", "updates", 1, 0),
    ),
)


def _set(config, batch_size: int, epochs: int = 0, accumulate: int = 1, lr: float = 0.0) -> dict[str, Any]:
    if lr:
        config["optimizer"]["lr"] = float(lr)
    config["train"]["batch_size"] = int(batch_size)
    config["train"]["accumulate_grad_batches"] = int(accumulate)
    if epochs:
        config["train"]["epochs"] = int(epochs)
    return config


@BATCHING.register("default", description="the study's train.batch_size, unchanged")
def default(config, n_train):
    return config


@BATCHING.register(
    "full_batch",
    description="batch gradient descent: every update uses the whole training set",
    **FIXED,
)
def full_batch(config, n_train, epochs, lr):
    return _set(config, n_train, epochs, lr=lr)


@BATCHING.register(
    "sgd_1",
    description="stochastic gradient descent: one example per update",
    **FIXED,
)
def sgd_1(config, n_train, epochs, lr):
    return _set(config, 1, epochs, lr=lr)


def _mini_batch(size: int):
    def fn(config, n_train, epochs, lr):
        return _set(config, size, epochs, lr=lr)

    BATCHING.register(f"mb_{size}", description=f"mini-batch gradient descent, batch {size}", **FIXED)(fn)


for _size in (8, 16, 32, 64, 128, 256, 512):
    _mini_batch(_size)


SCALED_LR = (0.0, None, True, True)  # 0 = the optimizer's default lr scaled linearly from B₀ to B


def _scaled_lr(config, batch_size: int) -> float:
    return config["optimizer"]["lr"] * batch_size / config["train"]["batch_size"]


@BATCHING.register(
    "large_linear",
    description="large batch with the linear scaling rule: lr × B/B₀ (Goyal et al. 2017)",
    defaults={"batch_size": 512, "epochs": 0},
    bounds=KEEP_EPOCHS,
)
def large_linear(config, n_train, batch_size, epochs):
    config["optimizer"]["lr"] = _scaled_lr(config, batch_size)
    return _set(config, batch_size, epochs)


def _large_with(optimizer: str, config, batch_size: int, epochs: int, lr: float) -> dict[str, Any]:
    defaults = OPTIMIZERS.get(optimizer).defaults
    # lr 0 = the optimizer's own default scaled linearly from B₀ to B, like large_linear.
    scaled = defaults["lr"] * batch_size / config["train"]["batch_size"]
    config["optimizer"] = {"name": optimizer, **defaults, "lr": lr or scaled}
    return _set(config, batch_size, epochs)


@BATCHING.register(
    "large_lars",
    description="large batch with LARS: layer-wise trust ratio ‖w‖/‖∇w‖ scales each layer's step",
    defaults={"batch_size": 512, "epochs": 0, "lr": 0.0},
    bounds={**KEEP_EPOCHS, "lr": SCALED_LR},
)
def large_lars(config, n_train, batch_size, epochs, lr):
    return _large_with("lars", config, batch_size, epochs, lr)


@BATCHING.register(
    "large_lamb",
    description="large batch with LAMB: Adam's update rescaled per layer by a trust ratio",
    defaults={"batch_size": 512, "epochs": 0, "lr": 0.0},
    bounds={**KEEP_EPOCHS, "lr": SCALED_LR},
)
def large_lamb(config, n_train, batch_size, epochs, lr):
    return _large_with("lamb", config, batch_size, epochs, lr)


@BATCHING.register(
    "accumulate",
    description="gradient accumulation: k micro-batches of b examples, one update of k·b",
    defaults={"micro_batch": 32, "k": 4, "epochs": 0, "lr": 0.0},
    bounds={**KEEP_EPOCHS, **OWN_LR, "k": (1, None, True, True)},
    search_space=LR_PER_BATCH,
)
def accumulate(config, n_train, micro_batch, k, epochs, lr):
    return _set(config, micro_batch, epochs, accumulate=k, lr=lr)
