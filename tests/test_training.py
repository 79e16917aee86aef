"""A real Lightning Trainer on the debug workload: seeding, data order, divergence, accumulation."""

from __future__ import annotations

import math

import pytest
import torch

from techbench.config import parse_params
from techbench.techniques import OPTIMIZERS
from techbench.techniques.batching import BATCHING
from techbench.training.single import train_single
from techbench.training.stacked import train_stacked
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


def _batching(raw_params, technique: str, **hp):
    block = {
        **raw_params["studies"]["optimizers"],
        "family": "batching",
        "techniques": [technique],
        "base": {"optimizer": {"name": "momentum", "lr": 0.1}},
        "technique_params": {technique: hp},
        "train": {"epochs": 3, "batch_size": 40},
    }
    return parse_params({"studies": {"b": block}}).studies["b"].run(technique)


def test_accumulation_through_lightning_equals_one_large_batch_including_the_partial_group(raw_params):
    """144 training examples: 3 groups of 4 micro-batches of 10, then a partial group of 10, 10 and 4; the run
    with one batch of 40 sees the same examples (the order depends on the seed alone) and ends the same."""
    accumulated = _batching(raw_params, "accumulate", micro_batch=10, k=4)
    large = _batching(raw_params, "default")
    a, b = train_single(accumulated, 0), train_single(large, 0)
    assert a.metrics["updates"] == b.metrics["updates"] == 3 * 4
    for key in ("train/loss", "val/loss"):
        torch.testing.assert_close(torch.tensor(a.histories[key]), torch.tensor(b.histories[key]), rtol=1e-5, atol=0)
    assert a.metrics["test/loss"] == pytest.approx(b.metrics["test/loss"], rel=1e-5)
    stacked = train_stacked(accumulated, [0, 1])
    assert stacked[0].metrics["test/loss"] == pytest.approx(b.metrics["test/loss"], rel=1e-5)
    assert stacked[1].metrics["test/loss"] == pytest.approx(train_single(large, 1).metrics["test/loss"], rel=1e-5)


def test_a_fixed_batch_size_trains_at_its_own_learning_rate_and_a_scaling_rule_at_its_rule(raw_params):
    """What tuning the batch study searches: mb_8's lr replaces the base optimizer's (0 keeps it); the linear
    rule scales the base lr by B/B₀ instead."""
    from techbench.training.effective import resolve
    from techbench.workloads import load_dataset

    data = load_dataset(_batching(raw_params, "default").data, 0)
    own = resolve(_batching(raw_params, "mb_8", lr=0.05), data)
    kept = resolve(_batching(raw_params, "mb_8"), data)
    rule = resolve(_batching(raw_params, "large_linear", batch_size=120), data)
    assert (own["optimizer"]["lr"], own.train["batch_size"]) == (0.05, 8)
    assert (kept["optimizer"]["lr"], kept["optimizer"]["name"]) == (0.1, "momentum")
    assert rule["optimizer"]["lr"] == pytest.approx(0.1 * 120 / 40) and rule.train["batch_size"] == 120
    assert "lr" not in BATCHING.get("large_linear").search_space and BATCHING.get("mb_8").search_space["lr"]


def test_lbfgs_line_search_evaluations_do_not_enter_the_train_loss(raw_params):
    """The epoch's train loss is the loss at each update's starting point, as for every other optimizer: with
    one full batch per epoch, epoch e's train loss is the loss of the weights after e - 1 updates, which the
    previous epoch's validation pass sees on its own split (so compare with a full-batch SGD run's own curve)."""
    raw_params["studies"]["optimizers"]["techniques"] = ["lbfgs"]
    cfg = _cfg(raw_params, "lbfgs", epochs=3, batch_size=1000)
    result = train_single(cfg, 0)
    losses = result.histories["train/loss"]
    first = _initial_train_loss(cfg)
    assert losses[0] == pytest.approx(first, rel=1e-5)


def _initial_train_loss(cfg) -> float:
    import lightning as L

    from techbench.training.effective import build_run_model, resolve
    from techbench.workloads import load_dataset, loss_fn

    L.seed_everything(0, workers=True, verbose=False)
    data = load_dataset(cfg.data, 0)
    model = build_run_model(resolve(cfg, data), data)
    with torch.no_grad():
        return float(loss_fn(model(data.x_train), data.y_train))


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


@pytest.mark.parametrize(
    "schedule",
    [{"name": "exponential", "k": 0.5}, {"name": "plateau", "gamma": 0.5, "patience": 0}],
)
def test_newton_steps_its_schedule(raw_params, schedule):
    """Newton trains by manual optimization, where Lightning steps no scheduler: the module steps it — per
    update for a schedule of t, after each validation for reduce-on-plateau (patience 0: any epoch whose val
    loss does not improve halves the LR)."""
    raw_params["studies"]["optimizers"].update(  # 40 noisy examples: the val loss soon stops improving
        techniques=["newton"],
        model={"name": "logreg"},
        data={"name": "debug", "train_size": 40, "noise": 1.5},
        base={"schedule": schedule},
    )
    result = train_single(_cfg(raw_params, "newton", epochs=6, batch_size=1000), 0)
    lrs, val = result.histories["lr"], result.histories["val/loss"]
    if schedule["name"] == "exponential":
        assert len(lrs) == 6 and lrs == pytest.approx([lrs[0] * math.exp(-0.5 * e) for e in range(6)], rel=1e-6)
    else:
        expected, lr, best = [], OPTIMIZERS.get("newton").defaults["lr"], math.inf
        for v in val:
            lr, best = (lr, v) if v < best * (1 - 1e-4) else (lr * 0.5, best)
            expected.append(lr)  # the LR logged with an epoch is the one after its validation
        assert lrs == pytest.approx(expected[: len(lrs)], rel=1e-6) and min(lrs) < lrs[0]
