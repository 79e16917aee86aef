"""A real Lightning Trainer on the debug workload: seeding, data order, divergence, accumulation."""

from __future__ import annotations

import math

import pytest
import torch

from techbench.config import parse_params
from techbench.training.single import train_single
from techbench.workloads import InMemoryLoader


def _cfg(raw_params, technique="adam", **train):
    raw_params["studies"]["optimizers"]["train"].update(train)
    return parse_params(raw_params).studies["optimizers"].run(technique)


def test_same_seed_same_numbers_different_seed_different(raw_params):
    cfg = _cfg(raw_params)
    a, b, c = (train_single(cfg, s).metrics for s in (0, 0, 1))
    assert a["test/acc"] == b["test/acc"] and a["test/loss"] == b["test/loss"]
    assert c["test/loss"] != a["test/loss"]


def test_diverging_run_is_recorded_not_raised(raw_params):
    raw_params["studies"]["optimizers"]["technique_params"] = {"sgd": {"lr": 1.0e4}}
    result = train_single(_cfg(raw_params, "sgd", epochs=5), 0)
    assert result.outcome == "diverged"
    assert result.diverged_step is not None and result.metrics["epochs_run"] < 5


def test_loader_is_seeded_complete_and_sharded():
    x, y = torch.arange(10).float().unsqueeze(1), torch.arange(10)
    first = [b[1].tolist() for b in InMemoryLoader(x, y, 4, shuffle=True, seed=3)]
    again = [b[1].tolist() for b in InMemoryLoader(x, y, 4, shuffle=True, seed=3)]
    other = [b[1].tolist() for b in InMemoryLoader(x, y, 4, shuffle=True, seed=4)]
    assert first == again != other
    assert sorted(sum(first, [])) == list(range(10)) and [len(b) for b in first] == [4, 4, 2]
    loader = InMemoryLoader(x, y, 4, shuffle=True, seed=3)
    assert [b[1].tolist() for b in loader] != [b[1].tolist() for b in loader]  # new order each epoch
    shards = [sum((b[1].tolist() for b in InMemoryLoader(x, y, 2, True, 3, r, 2)), []) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 5 and not set(shards[0]) & set(shards[1])


def test_gradient_of_k_micro_batches_equals_one_large_batch():
    """Accumulating k micro-batches of b (loss scaled by 1/k) gives the gradient of one batch of k*b."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
    x, y = torch.randn(32, 8, dtype=torch.float64), torch.randint(0, 3, (32,))
    loss_fn = torch.nn.functional.cross_entropy
    model.zero_grad()
    loss_fn(model(x), y).backward()
    full = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for xb, yb in zip(x.chunk(4), y.chunk(4), strict=True):
        (loss_fn(model(xb), yb) / 4).backward()
    for g_full, p in zip(full, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g_full, rtol=1e-12, atol=1e-14)


def test_training_learns_the_debug_task(raw_params):
    metrics = train_single(_cfg(raw_params, epochs=15), 0).metrics
    assert metrics["test/acc"] > 0.8 and math.isfinite(metrics["test/loss"])


@pytest.mark.slow
def test_ddp_two_cpu_processes_log_one_run(workdir, raw_params):
    """Data parallel on CPU (gloo, 2 processes): the multi-GPU code path, one MLflow run from rank 0."""
    from techbench.tracking import Tracker

    raw_params["hardware"] = {"devices": 2, "strategy": "ddp_spawn"}
    cfg = _cfg(raw_params)
    tracker = Tracker()
    result = train_single(cfg, 0)
    # The fit ran in spawned processes: its per-epoch log came back from rank 0.
    assert result.metrics["epochs_run"] == 3 and result.metrics["updates"] > 0
    tracker.write(result.record())
    runs = list(tracker.search("optimizers", {"config_hash": cfg.config_hash()}))
    assert len(runs) == 1
    assert len(tracker.history(runs[0].info.run_id, "val/acc")) == 3
    assert runs[0].data.params["hardware.devices"] == "2"
