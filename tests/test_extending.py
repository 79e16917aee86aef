"""Adding to the benchmark is one decorated function (an optimizer, a dropout variant, a restart procedure) or one
family object (a new family), registered here inside the test with no other file touched; each runs through the
single, stacked and tuned paths, the export and the report, and its numbers are checked against its formula."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from techbench.config import parse_params
from techbench.registry import Info, Registry
from techbench.report.render import write_reports
from techbench.study import export_study, run_study
from techbench.techniques import DROPOUT, FAMILIES, OPTIMIZERS, RESTARTS, Family
from techbench.techniques.dropout.placement import hidden
from techbench.techniques.restarts.common import best_index, member, outcome
from techbench.tracking import Tracker
from techbench.tuning import tune_study

WORKLOAD = {
    "data": {"name": "debug"},
    "model": {"name": "mlp", "hidden": [16]},
    "train": {"epochs": 2, "batch_size": 32},
}


# --- the four additions, as a user writes them ---------------------------------------------------------------------


def adamax_stacked(p, g, state, hp, t, segments):
    """torch.optim.Adamax's update over a stack (rows = members, hp = (K, 1) columns; stacked_updates.py)."""
    m, u = state.setdefault("exp_avg", torch.zeros_like(p)), state.setdefault("exp_inf", torch.zeros_like(p))
    m.lerp_(g, 0.1)
    torch.maximum(u * 0.999, g.abs() + 1e-8, out=u)
    p.add_(m / u * (-hp["lr"] / (1 - 0.9**t)).to(p.dtype))


def register_adamax():
    @OPTIMIZERS.register(
        "adamax",
        description="Adamax: Adam with the infinity norm, u ← max(β₂u, |g|), θ ← θ − η/(1−β₁ᵗ)·m/u",
        defaults={"lr": 0.002},
        search_space={"lr": {"low": 1e-4, "high": 1e-1, "log": True}},
        stacked=adamax_stacked,
    )
    def adamax(model, lr):
        return torch.optim.Adamax(model.parameters(), lr=lr)


class GaussianDropout(nn.Module):
    """Multiplicative Gaussian noise with the variance of dropout at rate p: x·(1 + σn), σ² = p/(1 − p)."""

    def __init__(self, p: float):
        super().__init__()
        self.sigma = math.sqrt(p / (1.0 - p))

    def forward(self, x):
        return x * (1.0 + self.sigma * torch.randn_like(x)) if self.training else x


def register_gaussian_dropout():
    @DROPOUT.register(
        "gaussian",
        description="Gaussian dropout: each hidden unit times 1 + σn, n ~ N(0, 1), σ² = p/(1 − p)",
        defaults={"p": 0.3},
        search_space={"p": {"low": 0.05, "high": 0.6}},
        modules=(GaussianDropout,),
        stackable=True,
    )
    def gaussian(model, n_train, p):
        return hidden(model, p, "gaussian", lambda: GaussianDropout(p))


def register_best_of_two():
    @RESTARTS.register(
        "best_of_k",
        description="k independent restarts with half the epoch budget each; keep the best by validation loss",
        defaults={"k": 2},
        search_space={"k": {"low": 2, "high": 3}},
        bounds={"k": (1, None, True, True)},
        kind="independent",
    )
    def best_of_k(ctx, k):
        models = ctx.fit_fresh(list(range(k)), max(1, ctx.epochs // 2))
        members = [member(ctx, m, max(1, ctx.epochs // 2)) for m in models]
        return outcome(models[best_index(members)], members, {"k": float(k)})


@torch.no_grad()
def _scale_(model: nn.Module, factor: float) -> nn.Module:
    for p in model.parameters():
        p.mul_(factor)
    return model


class InitScale(Family):
    """A toy family: the initial weights scaled by a factor (a model hook, so it works in every executor)."""

    def build_model(self, spec, model, n_train):
        return _scale_(model, self.hp(spec).get("factor", 1.0))

    def unstackable(self, spec, config):
        return None  # a scaled initialization trains like any other: seeds can share a stack


def toy_findings(groups, ctx) -> tuple[list[str], list[Path]]:
    return [f"toy findings for {', '.join(sorted(groups))}"], []


def register_family() -> Registry:
    scales = Registry("init_scale", Info)
    scales.register("unit", description="the initialization as drawn")(lambda: None)
    scales.register(
        "scaled",
        description="every initial weight times `factor`",
        defaults={"factor": 0.5},
        search_space={"factor": {"low": 0.1, "high": 2.0, "log": True}},
        bounds={"factor": (0.0, None, False, True)},
    )(lambda factor: None)
    FAMILIES.register(
        InitScale(
            "init_scale",
            scales,
            default={"name": "unit"},
            description="initial weight scale",
            findings="test_extending:toy_findings",
        )
    )
    return scales


@pytest.fixture(scope="module")
def extended():
    with OPTIMIZERS.temporary(), DROPOUT.temporary(), RESTARTS.temporary(), FAMILIES.temporary():
        register_adamax()
        register_gaussian_dropout()
        register_best_of_two()
        register_family()
        yield


# --- every path: single, stacked, tuned, export, report ------------------------------------------------------------

STUDIES = {  # the added technique is "tune"; "stacked": the executions its runs (or its restarts) must take
    "opt": {"family": "optimizer", "techniques": ["adam", "adamax", "adamax+gc"], "tune": "adamax"},
    "drop": {"family": "dropout", "techniques": ["none", "gaussian"], "tune": "gaussian"},
    "rest": {"family": "restart", "techniques": ["single", "best_of_k"], "tune": "best_of_k"},
    "toy": {"family": "init_scale", "techniques": ["unit", "scaled"], "tune": "scaled"},
}
# adamax+gc stacks too: its registry hook wraps adamax's stacked rule with per-member centralization.
SEQUENTIAL = {"single"}


def _params(name: str, execution: str) -> Any:
    s = STUDIES[name]
    block = {"family": s["family"], "techniques": s["techniques"], "seeds": 2, "execution": execution, **WORKLOAD}
    return parse_params({"studies": {name: block}, "tuning": {name: {"techniques": [s["tune"]], "trials": 2}}})


@pytest.mark.parametrize("name", list(STUDIES))
def test_an_added_technique_or_family_runs_every_path(extended, name, tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    stacked = _params(name, "vectorized")
    sequential = _params(name, "sequential")
    n = len(STUDIES[name]["techniques"]) * 2
    assert run_study(stacked, name, tracker=tracker) == n
    runs = list(tracker.search(name, {"complete": "1", "kind": "run"}))
    executions = {r.data.tags["technique"]: r.data.tags["execution"] for r in runs}
    # Every added technique took the stacked path (a procedure stacks the restarts inside each run).
    assert executions == {t: "sequential" if t in SEQUENTIAL else "vectorized" for t in STUDIES[name]["techniques"]}
    tuned = tune_study(stacked, name, tracker=tracker, storage=f"sqlite:///{tmp_path / 'optuna.db'}", root=tmp_path)
    assert tuned[STUDIES[name]["tune"]]["trials"] == 2 and len(tuned[STUDIES[name]["tune"]]["runs"]) == 2
    trials = [tracker.read(r.info.run_id) for r in tracker.search(name, {"kind": "trial"})]
    assert len(trials) == 2
    if name == "rest":  # the trials ran the procedure itself, at the k each trial proposed
        assert all(t.metrics["procedure/k"] == t.config["restart"]["k"] for t in trials)
    out = export_study(stacked, name, tracker=tracker, root=tmp_path)
    results = json.loads((out / "runs.json").read_text())
    assert {r["technique"] for r in results["runs"]} == set(STUDIES[name]["techniques"])
    assert set(results["techniques"]) == set(STUDIES[name]["techniques"])
    write_reports(tmp_path, tmp_path / "reports", tmp_path / "no-benchmarks")
    md = (tmp_path / "reports" / f"{name}.md").read_text()
    for t in STUDIES[name]["techniques"]:
        assert f"| {t} | 2 |" in md
    assert "## Tuning budgets" in md and "| tuned test acc % |" in md
    if name == "toy":
        assert "toy findings for scaled, unit" in md
    # The single executor gives the stacked runs' numbers (seeds trained one at a time, a fresh store).
    alone = Tracker(f"sqlite:///{tmp_path / 'alone.db'}")
    run_study(sequential, name, tracker=alone)
    a = {(r.data.tags["technique"], r.data.tags["seed"]): r.data.metrics["test/loss"] for r in runs}
    b = {
        (r.data.tags["technique"], r.data.tags["seed"]): r.data.metrics["test/loss"]
        for r in alone.search(name, {"complete": "1", "kind": "run"})
    }
    assert a.keys() == b.keys()
    # A custom noise module makes the stack take the vmap path, whose noise is drawn from the stack's stream (only
    # nn.Dropout in a plain MLP draws each member's masks from its own sequential stream).
    if name != "drop":
        assert a == pytest.approx(b, rel=1e-4)


# --- the additions do what they say --------------------------------------------------------------------------------


def test_added_optimizer_first_update_is_its_formula_and_gets_its_gc_variant(extended):
    assert "adamax+gc" in OPTIMIZERS and OPTIMIZERS.get("adamax+gc").info.base == "adamax"
    model = nn.Linear(3, 1, bias=False)
    w0 = model.weight.detach().clone()
    opt = OPTIMIZERS.get("adamax").factory(model, lr=0.01)
    model(torch.ones(1, 3)).sum().backward()
    g = model.weight.grad.clone()
    opt.step()
    # t = 1: m = (1 − β₁)g, u = |g|, step η/(1 − β₁)·m/u = η·sign(g)
    torch.testing.assert_close(model.weight.detach(), w0 - 0.01 * torch.sign(g))


def test_added_dropout_keeps_the_expectation_and_is_stochastic_under_mc(extended):
    from techbench.techniques.dropout import stochastic_modules

    assert GaussianDropout in stochastic_modules()
    torch.manual_seed(0)
    x = torch.ones(200_000)
    layer = GaussianDropout(0.5).train()
    y = layer(x)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01) and y.var().item() == pytest.approx(1.0, abs=0.02)
    assert torch.equal(layer.eval()(x), x)


def test_unknown_flags_and_families_are_errors_at_registration(extended):
    with OPTIMIZERS.temporary(), pytest.raises(ValueError, match="unknown flag.*stakced.*allowed: stacked"):
        OPTIMIZERS.register("typo", defaults={"lr": 0.1}, stakced=None)(lambda model, lr: None)
    with RESTARTS.temporary(), pytest.raises(ValueError, match="restart kind 'indepndent'"):
        RESTARTS.register("typo", kind="indepndent")(lambda ctx: None)
    with FAMILIES.temporary(), pytest.raises(ValueError, match="registered twice"):
        FAMILIES.register(Family("dropout", DROPOUT, default={"name": "none"}))
