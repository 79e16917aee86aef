"""The contract between a technique family and the runs it takes part in.

A family is one object: its name (also the slot of the run configuration its entries fill and the
``family:`` of a study that varies it), its registry, the component a run uses when a study varies another
family, and how its chosen entry takes part in every run, through hooks whose defaults do nothing:

  resolve(spec, config, n_train) -> config      change the run configuration before training (batch regimes)
  build_model(spec, model, n_train) -> model    rewrite the model (dropout variants)
  objective(spec, model, n_train) -> Objective  penalty terms and around-the-step updates (weight penalties)
  callbacks(spec, config) -> [Callback]         Lightning callbacks (stopping rules)
  member_callbacks(spec, config) -> [..] | None what a stack member uses instead (``on_member_epoch``); None: none
  shape_optimizer(spec, optimizer, model)       regroup a single model's freshly built optimizer (per-block LRs)
  select_weights(spec, fit) -> metrics          after fit: choose the weights that are kept (best validation)
  measure(spec, model, data) -> metrics         after fit: the family's own measurements
  unstackable(spec, config) -> reason | None    why the seeds of a run cannot train as one vmap'd stack

Every run has every slot filled, so every family's hooks run in every run (in registration order). The
optimizer and schedule families also ``build`` the optimizer and the scheduler; the entries of a procedure
family (``procedure = True``: restarts) are procedures that train several solutions through the procedure
executor.

What the report needs is declared here as data: ``columns`` (extra table columns), ``summary`` (metrics that
join metrics.json), ``findings`` ("module:function" of the report code that writes the family's
sentences and figures per workload; it is imported by the report, never by training) and ``across`` (the same
for a section over all of a study's workloads: ``fn(results, figures) -> Section | None``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from techbench.registry import Entry, Registry, hyperparameters


@dataclass(frozen=True)
class Column:
    """An extra column of a study's results table: a run metric shown as mean ± CI."""

    metric: str  # the run's metric name, e.g. "weights/l2_norm"
    header: str
    scale: float = 1.0
    digits: int = 2


@dataclass
class Objective:
    """What a family adds to the optimized cost: penalty terms on the loss, and updates around the step.

    Weight penalties are declared term by term, (parameter, coefficient c), so that a stack of members can apply
    each member's own coefficients to its row of the stacked parameter; ``terms`` is any other penalty, computed
    from one model (not stackable)."""

    l2: list[tuple[nn.Parameter, float]] = field(default_factory=list)  # c·Σw² added to the cost
    l1: list[tuple[nn.Parameter, float]] = field(default_factory=list)  # c·Σ|w| added to the cost
    # terms(model) -> scalar tensor added to the training loss; None = no such term
    terms: Callable[[nn.Module], torch.Tensor] | None = None
    # batch_terms(x, y, logits, loss) -> scalar added to the cost of that batch: a term that needs the batch,
    # e.g. distillation's soft targets from a teacher on x (not stackable either); None = no such term
    batch_terms: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    # (parameter, shrink coefficient c): before each step w ← w − lr·c·w (decoupled weight decay)
    decay: list[tuple[nn.Parameter, float]] = field(default_factory=list)
    # (parameter, threshold coefficient c): after each step w ← sign(w)·max(|w| − lr·c, 0) (L1's proximal step)
    prox: list[tuple[nn.Parameter, float]] = field(default_factory=list)

    @property
    def penalty(self) -> Callable[[nn.Module], torch.Tensor] | None:
        """penalty(model) -> the scalar added to the training loss; None when nothing is added."""
        if not (self.l2 or self.l1 or self.terms is not None):
            return None

        def total(model: nn.Module) -> torch.Tensor:
            value = sum(c * p.pow(2).sum() for p, c in self.l2) + sum(c * p.abs().sum() for p, c in self.l1)
            return value + self.terms(model) if self.terms is not None else value

        return total

    @property
    def active(self) -> bool:
        """Whether it changes anything: a penalty, a batch term, a decay or a proximal step."""
        return self.penalty is not None or self.batch_terms is not None or bool(self.decay) or bool(self.prox)

    @property
    def one_model(self) -> bool:
        """Whether it has a term computed from one model or its batch, which a stack cannot apply per member."""
        return self.terms is not None or self.batch_terms is not None

    @staticmethod
    def combine(parts: list[Objective | None]) -> Objective:
        parts = [p for p in parts if p is not None]
        terms = [p.terms for p in parts if p.terms is not None]
        batch = [p.batch_terms for p in parts if p.batch_terms is not None]
        return Objective(
            l2=[t for p in parts for t in p.l2],
            l1=[t for p in parts for t in p.l1],
            terms=(lambda model: sum(f(model) for f in terms)) if terms else None,
            batch_terms=(lambda *a: sum(f(*a) for f in batch)) if batch else None,
            decay=[d for p in parts for d in p.decay],
            prox=[d for p in parts for d in p.prox],
        )

    @torch.no_grad()
    def decay_(self, lr: float) -> None:
        for p, c in self.decay:
            p.mul_(1.0 - lr * c)

    @torch.no_grad()
    def prox_(self, lr: float) -> None:
        for p, c in self.prox:
            p.copy_(p.sign() * (p.abs() - lr * c).clamp_min(0.0))


@dataclass
class Fit:
    """What a family sees of a finished fit: the LightningModule (``module.model`` is the trained model),
    the callbacks the family gave the fit, the epochs trained, the effective configuration and the data."""

    module: Any
    callbacks: list
    epochs_run: int
    config: dict[str, Any]
    data: Any


class Family:
    """A technique family. Subclass it and override the hooks the family needs (see the module docstring)."""

    procedure = False  # True: entries are procedures run by the procedure executor (restarts)

    def __init__(
        self,
        name: str,
        registry: Registry,
        default: dict[str, Any],
        description: str = "",
        columns: tuple[Column, ...] = (),
        summary: tuple[str, ...] = (),
        findings: str | None = None,
        across: str | None = None,
    ):
        self.name, self.registry, self.default, self.description = name, registry, dict(default), description
        self.columns, self.summary, self.findings = tuple(columns), tuple(summary), findings
        self.across = across

    # --- helpers ---------------------------------------------------------------------------------------------

    def entry(self, spec: dict[str, Any]) -> Entry:
        return self.registry.get(spec["name"])

    def hp(self, spec: dict[str, Any]) -> dict[str, Any]:
        return hyperparameters(self.entry(spec), spec)

    def describe(self, name: str) -> dict[str, Any]:
        """An entry's description and capability flags as plain data (for results and the report)."""
        entry = self.registry.get(name)
        flags = {f.name: getattr(entry.info, f.name) for f in dataclasses.fields(entry.info)}
        return {"description": entry.description, **{k: v for k, v in flags.items() if _plain(v)}}

    # --- hooks ----------------------------------------------------------------------------------------------

    def resolve(self, spec: dict[str, Any], config: dict[str, Any], n_train: int) -> dict[str, Any]:
        return config

    def build_model(self, spec: dict[str, Any], model: nn.Module, n_train: int) -> nn.Module:
        return model

    def objective(self, spec: dict[str, Any], model: nn.Module, n_train: int) -> Objective | None:
        return None

    def callbacks(self, spec: dict[str, Any], config: dict[str, Any]) -> list:
        return []

    def member_callbacks(self, spec: dict[str, Any], config: dict[str, Any]) -> list | None:
        """The stand-ins for ``callbacks`` in one member of a stack, which has no trainer of its own: objects with
        ``on_member_epoch(epoch, values, weights) -> bool`` (True: stop this member), called after each epoch's
        validation with the member's epoch values and a function returning its current weights. None: this
        family's callbacks have no stand-in, so a run that has them is not stackable."""
        return None if self.callbacks(spec, config) else []

    def shape_optimizer(self, spec: dict[str, Any], optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
        return None

    def select_weights(self, spec: dict[str, Any], fit: Fit) -> dict[str, float]:
        return {}

    def measure(self, spec: dict[str, Any], model: nn.Module, data: Any) -> dict[str, float]:
        return {}

    def unstackable(self, spec: dict[str, Any], config: dict[str, Any]) -> str | None:
        """Why this component keeps the seeds of a run from training as one stack; None if it does not.
        Default: the entry's ``stackable`` flag where its info has one, else not stackable."""
        entry = self.entry(spec)
        return None if getattr(entry.info, "stackable", False) else f"{self.name} {spec['name']}"

    def __repr__(self) -> str:
        return f"Family({self.name!r}, {len(self.registry)} entries)"


def _plain(v: Any) -> bool:
    return (
        v is None
        or isinstance(v, (bool, int, float, str))
        or (isinstance(v, (list, tuple)) and all(isinstance(x, (bool, int, float, str)) for x in v))
    )


class Families:
    """The technique families, in the order their hooks run."""

    def __init__(self):
        self._families: dict[str, Family] = {}

    def register(self, family: Family) -> Family:
        if family.name in self._families:
            raise ValueError(f"family {family.name!r} is registered twice")
        self._families[family.name] = family
        return family

    def __getitem__(self, name: str) -> Family:
        return self._families[name]

    def __contains__(self, name: object) -> bool:
        return name in self._families

    def __iter__(self) -> Iterator[Family]:
        return iter(list(self._families.values()))

    def names(self) -> list[str]:
        return list(self._families)

    def values(self) -> list[Family]:
        return list(self._families.values())

    @contextlib.contextmanager
    def temporary(self) -> Iterator[Families]:
        """Families registered inside the ``with`` block are removed at its end (tests register their own)."""
        before = dict(self._families)
        try:
            yield self
        finally:
            self._families = before
