"""Technique families. Each family is one object (techniques/family.py) whose entries fill one slot of a run
config (the optimizer, the learning-rate schedule, the batch regime, the weight penalty, the stopping rule, the
dropout variant, the restart procedure); a study varies one family and fixes the others. A new family is one
more ``FAMILIES.register(family)``; its hooks say how its entries take part in a run."""

from __future__ import annotations

from techbench.techniques import (
    adaptation,
    batching,
    dropout,
    early_stopping,
    optimizers,
    regularization,
    restarts,
    schedules,
    transfer,
)
from techbench.techniques.adaptation import ADAPTATION
from techbench.techniques.batching import BATCHING
from techbench.techniques.dropout import DROPOUT
from techbench.techniques.early_stopping import STOPPING
from techbench.techniques.family import Column, Families, Family, Fit, Objective
from techbench.techniques.optimizers import OPTIMIZERS
from techbench.techniques.regularization import REGULARIZERS
from techbench.techniques.restarts import RESTARTS
from techbench.techniques.schedules import SCHEDULES
from techbench.techniques.transfer import TRANSFER

FAMILIES = Families()
# transfer first: which parameters train is settled before dropout rewrites the model or penalties collect them
_ORDER = (optimizers, schedules, transfer, batching, regularization, early_stopping, dropout, restarts, adaptation)
for _module in _ORDER:
    FAMILIES.register(_module.FAMILY)

__all__ = [
    "ADAPTATION",
    "BATCHING",
    "DROPOUT",
    "FAMILIES",
    "OPTIMIZERS",
    "REGULARIZERS",
    "RESTARTS",
    "SCHEDULES",
    "STOPPING",
    "TRANSFER",
    "Column",
    "Families",
    "Family",
    "Fit",
    "Objective",
]
