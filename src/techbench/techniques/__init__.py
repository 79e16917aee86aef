"""Technique families. Each family is one registry whose entries fill one slot of a run config
(the optimizer, the learning-rate schedule, ...); a study varies one family and fixes the others."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from techbench.registry import Registry
from techbench.techniques.optimizers import OPTIMIZERS


@dataclass(frozen=True)
class Family:
    name: str
    registry: Registry
    slot: str  # the run-config key its entries fill
    default: Any  # the component a study uses for this slot when it varies another family


FAMILIES: dict[str, Family] = {
    "optimizers": Family("optimizers", OPTIMIZERS, slot="optimizer", default={"name": "adam"}),
}

__all__ = ["FAMILIES", "Family", "OPTIMIZERS"]
