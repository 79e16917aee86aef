"""Restart procedures: train several solutions and keep one ("Random Restarts", "Perturbation Methods",
"Cyclical Learning Rates", "Restart Strategies"). The contract (what a procedure may use and returns) is in
contract.py; the procedures, one module per kind: independent.py (random restarts, init schemes),
perturbation.py (ILS, basin hopping, selective perturbation, partial re-init), trajectory.py (graduated
optimization, SGDR, snapshot ensembles), budget.py (fixed interval, on plateau, early abandon)."""

from __future__ import annotations

from techbench.techniques.family import Family
from techbench.techniques.restarts import budget, independent, perturbation, trajectory  # noqa: F401 (register)
from techbench.techniques.restarts.common import expected_best_of_n, perturb_, reinit_, reinit_last_
from techbench.techniques.restarts.contract import (
    RESTARTS,
    RestartContext,
    RestartInfo,
    RestartOutcome,
    run_procedure,
)


class RestartFamily(Family):
    procedure = True  # each entry trains several solutions per run (training/procedure.py)

    def unstackable(self, spec, config):
        return None  # outside a restart study the slot holds `single`: one ordinary run, nothing to refuse


FAMILY = RestartFamily(
    "restart",
    RESTARTS,
    default={"name": "single"},
    description="procedures that train several solutions and keep one (Random Restarts)",
    findings="techbench.report.families.restarts:findings",
)

__all__ = [
    "FAMILY",
    "RESTARTS",
    "RestartContext",
    "RestartInfo",
    "RestartOutcome",
    "expected_best_of_n",
    "perturb_",
    "reinit_",
    "reinit_last_",
    "run_procedure",
]
