"""Each family's sentences and figures for "What the numbers say". A family names its findings function in its
own object (``findings = "module:function"``); results/<study>/runs.json carries the name, and the report
imports it from there, so report code never imports techniques. A findings function takes the workload's
groups (label -> rows) and a FindingsContext, and returns (sentences, figure paths)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from techbench.analysis.rows import value
from techbench.analysis.stats import mean_ci

Groups = dict[str, list[dict[str, Any]]]


@dataclass(frozen=True)
class FindingsContext:
    stem: Path  # figures are written to <stem>_<what>.png
    title: str  # "<study> / <workload>"
    techniques: dict[str, dict[str, Any]] = field(default_factory=dict)  # technique -> description and flags
    bias_variance: dict[str, Any] = field(default_factory=dict)  # label -> decomposition of this workload
    default: str | None = None  # the family's default technique: the baseline its findings compare with

    def figure(self, suffix: str) -> Path:
        return self.stem.with_name(self.stem.name + suffix)

    def flag(self, label: str, name: str) -> Any:
        """A flag of the technique a group label belongs to (label = technique[@variant])."""
        return self.techniques.get(label.split("@", 1)[0], {}).get(name)


Findings = Callable[[Groups, FindingsContext], tuple[list[str], list[Path]]]


def mean_of(rows: list[dict[str, Any]], key: str) -> float | None:
    """Mean over the rows that have ``key`` (a derived row key or a final metric name); None if none has it."""
    est = mean_ci([v for r in rows if (v := value(r, key)) is not None])
    return est.mean if est.n else None


def load(path: str | None) -> Findings | None:
    """The findings function named "module:function" (None: the family has none)."""
    if not path:
        return None
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
