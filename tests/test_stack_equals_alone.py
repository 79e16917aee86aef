"""For every stackable registry entry (an optimizer with a stacked rule, a schedule with a formula, a stackable
dropout variant of a plain MLP), two members of one stack — different seeds, different hyperparameters — end with
the weights and metrics of the same (hyperparameters, seed) trained alone. Registry-parametrized: a new stackable
entry is tested here without a line of test code."""

from __future__ import annotations

import pytest
import torch

from techbench.config import parse_params
from techbench.techniques import DROPOUT, OPTIMIZERS, REGULARIZERS, SCHEDULES, STOPPING

WORKLOAD = {
    "data": {"name": "debug"},
    "model": {"name": "mlp", "hidden": [16]},
    "train": {"epochs": 3, "batch_size": 32},
}
CASES = (
    [("optimizer", n) for n in OPTIMIZERS.names() if OPTIMIZERS.get(n).info.stacked is not None]
    + [("schedule", n) for n in SCHEDULES.names() if SCHEDULES.get(n).info.lr_at is not None]
    + [("dropout", n) for n in DROPOUT.names() if DROPOUT.get(n).info.stackable and DROPOUT.get(n).info.needs is None]
    + [("regularizer", n) for n in REGULARIZERS.names() if REGULARIZERS.get(n).info.stackable]
)


def _second_point(family: str, name: str) -> dict:
    """A point of the entry's search space away from its defaults (a quarter of the way, log-scaled); for a dropout
    variant, its rate only."""
    registry = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "dropout": DROPOUT, "regularizer": REGULARIZERS}[family]
    space = registry.get(name).search_space
    if family == "dropout":
        # Only the rate varies per member: an input-dropout layer or a widened model is another architecture
        # (such members are refused: tested in test_stacked_trials.py).
        space = {} if registry.get(name).info.widen else {k: v for k, v in space.items() if k == "p"}
    hp = {}
    for key, dim in space.items():
        if "choices" in dim:
            hp[key] = dim["choices"][-1]
        else:
            lo, hi = dim["low"], dim["high"]
            value = lo * (hi / lo) ** 0.25 if dim.get("log") else lo + (hi - lo) * 0.25
            hp[key] = round(value) if isinstance(lo, int) and isinstance(hi, int) else value
    return hp


@pytest.mark.parametrize("family,name", CASES, ids=[f"{f}:{n}" for f, n in CASES])
def test_a_stack_member_equals_its_run_alone(family, name):
    from techbench.training.single import train_single
    from techbench.training.stacked import refusal, train_members

    block = {"family": family, "techniques": [name], "seeds": 1, **WORKLOAD}
    if family != "optimizer":
        block["base"] = {"optimizer": {"name": "momentum", "lr": 0.05}}
    base = parse_params({"studies": {"s": block}}).study("s").run(name)
    members = [(base, 0), (base.with_technique_params(_second_point(family, name), variant="b"), 1)]
    assert refusal(members) is None
    for stacked, (cfg, seed) in zip(train_members(members), members, strict=True):
        alone = train_single(cfg, seed)
        for a, b in zip(alone.model.parameters(), stacked.model.parameters(), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
        assert stacked.outcome == alone.outcome
        assert stacked.metrics["test/loss"] == pytest.approx(alone.metrics["test/loss"], rel=1e-4, nan_ok=True)
        assert stacked.histories["lr"] == pytest.approx(alone.histories["lr"], rel=1e-6)


STOPPING_CASES = STOPPING.names()
QUICK = {
    "patience": 1,
    "window": 2,
    "min_slope": 0.05,
    "min_delta": 1e-3,
    "rel_delta": 1e-3,
    "beta": 0.5,
}  # rules that fire early


@pytest.mark.parametrize("name", STOPPING_CASES)
def test_a_stack_member_stops_where_its_run_alone_stops(name):
    """Each member's stopping rule decides on its own validation curve, at the epoch its run alone stops, and
    keeps the same best-validation weights (restored or not): stop/* and test metrics equal the run alone."""
    from techbench.training.single import train_single
    from techbench.training.stacked import refusal, train_members

    block = {
        "family": "stopping",
        "techniques": [name],
        "seeds": 1,
        **WORKLOAD,
        "data": {"name": "debug", "label_noise": 0.3},  # noisy training labels: the validation loss turns up
        "train": {"epochs": 12, "batch_size": 32},
    }
    block["base"] = {"optimizer": {"name": "momentum", "lr": 0.1}}
    base = parse_params({"studies": {"s": block}}).study("s").run(name)
    quick = {k: v for k, v in QUICK.items() if k in STOPPING.get(name).defaults}
    members = [(base, 0), (base.with_technique_params(quick, variant="b"), 1), (base, 2)]
    assert refusal(members) is None
    fired = []
    for stacked, (cfg, seed) in zip(train_members(members), members, strict=True):
        alone = train_single(cfg, seed)
        stops = {k: v for k, v in alone.metrics.items() if k.startswith("stop/")}
        assert stops, "the stopping study measures best and last weights of every rule"
        assert {k: stacked.metrics[k] for k in stops} == pytest.approx(stops, rel=1e-4)
        assert stacked.metrics["epochs_run"] == alone.metrics["epochs_run"]
        assert stacked.metrics["test/acc"] == pytest.approx(alone.metrics["test/acc"], abs=1e-9)
        assert stacked.metrics["test/loss"] == pytest.approx(alone.metrics["test/loss"], rel=1e-4)
        fired.append(stops["stop/fired"])
    if name != "fixed_budget":
        assert fired[1] == 1.0, "the quick member's rule fires inside the budget: the test sees a stop"
