"""Technique families. Each family is one registry whose entries fill one slot of a run config
(the optimizer, the learning-rate schedule, the batch regime, the weight penalty, the stopping rule, the
dropout variant); a study varies one family and fixes the others."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from techbench.registry import Registry
from techbench.techniques.batching import BATCHING
from techbench.techniques.dropout import DROPOUT
from techbench.techniques.early_stopping import STOPPING
from techbench.techniques.optimizers import OPTIMIZERS
from techbench.techniques.regularization import REGULARIZERS
from techbench.techniques.restarts import RESTARTS
from techbench.techniques.schedules import SCHEDULES


@dataclass(frozen=True)
class Family:
    name: str
    registry: Registry
    slot: str  # the run-config key its entries fill
    default: Any  # the component a study uses for this slot when it varies another family


FAMILIES: dict[str, Family] = {
    "optimizers": Family("optimizers", OPTIMIZERS, slot="optimizer", default={"name": "adam"}),
    "lr_schedules": Family("lr_schedules", SCHEDULES, slot="schedule", default={"name": "constant"}),
    "batch_size": Family("batch_size", BATCHING, slot="batching", default={"name": "default"}),
    "regularization": Family("regularization", REGULARIZERS, slot="regularizer", default={"name": "none"}),
    "early_stopping": Family("early_stopping", STOPPING, slot="stopping", default={"name": "fixed_budget"}),
    "dropout": Family("dropout", DROPOUT, slot="dropout", default={"name": "none"}),
    "restarts": Family("restarts", RESTARTS, slot="restart", default={"name": "single"}),
}

__all__ = [
    "BATCHING",
    "DROPOUT",
    "FAMILIES",
    "Family",
    "OPTIMIZERS",
    "REGULARIZERS",
    "RESTARTS",
    "SCHEDULES",
    "STOPPING",
]
