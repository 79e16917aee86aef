"""The LR range test probe on the debug workload: a finite suggestion inside the sweep, one point per step,
the same numbers for the same seed."""

from __future__ import annotations

import math

import pytest

from techbench.config import component
from techbench.probes import PROBES, ProbeContext, run_probe
from techbench.probes.lr_range_test import _smoothed, _steepest
from techbench.report.probes.lr_range_test import plot, verdict
from techbench.workloads import DATASETS


def _ctx(seed: int = 0) -> ProbeContext:
    return ProbeContext(
        data=component("data", DATASETS, {"name": "debug"}),
        model={"name": "mlp", "hidden": [16]},
        train={"epochs": 3, "batch_size": 32},
        hardware={"accelerator": "cpu", "precision": "32-true", "deterministic": True},
        components={"optimizer": {"name": "sgd", "lr": 0.01}},
        seed=seed,
    )


@pytest.fixture(scope="module")
def runs():
    hp = PROBES.get("lr_range_test").defaults
    return hp, [run_probe("lr_range_test", _ctx(0), hp), run_probe("lr_range_test", _ctx(0), hp)]


def test_suggestion_is_finite_and_inside_the_sweep(runs):
    hp, (result, _) = runs
    row = result.rows[0]
    assert row["row"] == "lr_range_test"
    for key in ("suggested_lr", "steepest_lr", "min_loss_lr"):
        assert math.isfinite(row[key]) and hp["min_lr"] <= row[key] <= hp["max_lr"], key
    assert math.isclose(row["min_loss_lr_div10"], row["min_loss_lr"] / 10)


def test_curve_has_one_point_per_step_at_increasing_lr(runs):
    hp, (result, _) = runs
    curve = result.curves["lr_range_test"]
    assert len(curve["x"]) == len(curve["loss"]) == len(curve["raw_loss"]) == hp["num_training"]
    assert all(a < b for a, b in zip(curve["x"], curve["x"][1:], strict=False))
    assert math.isclose(curve["x"][0], hp["min_lr"]) and math.isclose(curve["x"][-1], hp["max_lr"])
    # Correctly debiased, the first smoothed point is the first loss itself (4 classes: about ln 4).
    assert curve["loss"][0] == curve["raw_loss"][0] and 1.0 < curve["loss"][0] < 2.0


def test_same_seed_same_numbers(runs):
    _, (a, b) = runs
    assert a.rows == b.rows and a.curves == b.curves


def test_plot_and_verdict(runs, tmp_path):
    _, (a, b) = runs
    results = [{**a.as_dict(), "seed": 0}, {**b.as_dict(), "seed": 1}]
    assert plot(results, tmp_path / "lr.png").stat().st_size > 0
    sentences = verdict(results)
    assert f"{a.rows[0]['suggested_lr']:.3g}" in sentences[0]


def test_helpers_skip_overflowed_losses():
    assert _smoothed([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    lrs = [10.0**e for e in range(-6, 9)]
    losses = [1.0] * 8 + [0.9, 0.4, 0.35] + [math.nan] * 4
    # central differences per decade: 1e1: -0.05, 1e2: -0.3, 1e3: -0.275; the NaNs are left out
    assert _steepest(lrs, losses, skip_begin=2) == pytest.approx(1e2)
    assert math.isnan(_steepest(lrs, [math.nan] * len(lrs)))
