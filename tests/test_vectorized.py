"""`execution: vectorized`: K seeds trained as one vmap'd stack give each seed the numbers of its own
sequential run, and each seed is still its own MLflow run."""

from __future__ import annotations

import pytest
import torch

from techbench.config import parse_params
from techbench.tracking import Tracker

SEEDS = [0, 1, 2]


def _study(
    optimizer: dict, execution: str = "vectorized", data: dict | None = None, model: dict | None = None, **extra
):
    block = {
        "family": "optimizer",
        "techniques": [optimizer["name"]],
        "technique_params": {optimizer["name"]: {k: v for k, v in optimizer.items() if k != "name"}},
        "seeds": len(SEEDS),
        "data": data or {"name": "debug"},
        "model": model or {"name": "mlp", "hidden": [16]},
        "train": {"epochs": 3, "batch_size": 32},
        "execution": execution,
        **extra,
    }
    return parse_params({"studies": {"s": block}})


RESAMPLED = {"name": "debug", "train_size": 100, "label_noise": 0.2, "resample": True}


CNN = {"name": "cnn1d", "channels": 4}


@pytest.mark.parametrize(
    "optimizer,data,model",
    [
        ({"name": "adam", "lr": 0.01}, None, None),
        ({"name": "momentum", "lr": 0.05}, None, None),
        ({"name": "adam"}, RESAMPLED, None),
        ({"name": "adam", "lr": 0.01}, None, CNN),
    ],
    ids=["adam", "momentum", "adam-per-seed-training-sets", "cnn-grouped-convolutions"],
)
def test_vectorized_seeds_equal_sequential_runs(optimizer, data, model):
    from techbench.training.single import train_single
    from techbench.training.stacked import train_stacked

    cfg = _study(optimizer, data=data, model=model).study("s").runs[0]
    stacked = train_stacked(cfg, SEEDS)
    for result in stacked:
        alone = train_single(cfg, result.seed)
        for a, b in zip(alone.model.parameters(), result.model.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        for key in ("test/acc", "train/final_acc", "epochs_run", "updates"):
            assert result.metrics[key] == pytest.approx(alone.metrics[key], abs=1e-6), key
        assert result.metrics["test/loss"] == pytest.approx(alone.metrics["test/loss"], rel=1e-4)
    # different seeds, different models: the stack did not tie them together
    assert not torch.equal(next(stacked[0].model.parameters()), next(stacked[1].model.parameters()))


def test_each_seed_is_its_own_mlflow_run_with_per_epoch_curves(tmp_path):
    from techbench.study import run_study

    params = _study({"name": "adam", "lr": 0.01})
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert run_study(params, "s", tracker=tracker) == len(SEEDS)
    runs = list(tracker.search("s", {"complete": "1"}))
    assert sorted(r.info.run_name for r in runs) == [f"adam/debug_mlp/seed{s}" for s in SEEDS]
    for r in runs:
        assert r.data.tags["execution"] == "vectorized" and r.data.metrics["vectorized_k"] == len(SEEDS)
        assert len(tracker.history(r.info.run_id, "val/loss")) == 3
        assert len(tracker.history(r.info.run_id, "train/acc")) == 3
        assert 0 <= r.data.metrics["test/acc"] <= 1
    assert run_study(params, "s", tracker=tracker) == 0  # finished seeds are not trained again


def test_unstackable_configs_fall_back_to_sequential_runs(tmp_path, caplog):
    from techbench.study import run_study

    params = _study({"name": "lbfgs", "max_iter": 2})
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with caplog.at_level("INFO", logger="techbench"):
        assert run_study(params, "s", tracker=tracker) == len(SEEDS)
    assert "sequential seeds (not stackable: optimizer lbfgs (no stacked update rule)" in caplog.text
    runs = list(tracker.search("s", {"complete": "1"}))
    assert all(r.data.tags["execution"] == "sequential" for r in runs)
    assert all(r.data.tags["stack_refused"].startswith("not stackable: optimizer lbfgs") for r in runs)


def test_dropout_masks_differ_between_seeds_in_the_stack():
    from techbench.training.stack_module import StackedModule
    from techbench.workloads import build_model

    torch.manual_seed(0)
    model = build_model({"name": "mlp", "hidden": [64], "activation": "relu", "dropout": 0.5}, (1, 8), 3)
    same = StackedModule([model, model], None)
    x = torch.randn(5, 1, 8)
    out = same._forward(x, shared_input=True)  # identical weights, training mode: only the masks differ
    assert out.shape == (2, 5, 3) and not torch.allclose(out[0], out[1])


def test_execution_mode_is_validated():
    from techbench.errors import ConfigError

    with pytest.raises(ConfigError, match="execution.*sequential, vectorized"):
        _study({"name": "adam"}, execution="parallel")


def test_vectorized_restarts_train_on_the_runs_own_resampled_data(tmp_path):
    """Independent restarts inside a restart run use the run's training set even when it is resampled per
    seed, so the stacked and the one-at-a-time procedure agree; the run is tagged as vectorized."""
    from techbench.training.procedure import train_procedure

    def block(execution):
        return {
            "family": "restart",
            "techniques": ["random_restarts"],
            "technique_params": {"random_restarts": {"restarts": 3}},
            "seeds": 1,
            "data": RESAMPLED,
            "model": {"name": "mlp", "hidden": [16]},
            "train": {"epochs": 2, "batch_size": 32},
            "execution": execution,
        }

    params = parse_params({"studies": {"v": block("vectorized"), "q": block("sequential")}})
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    stacked = train_procedure(params.study("v").runs[0], 1, "vectorized")
    tracker.write(stacked.record())
    alone = train_procedure(params.study("q").runs[0], 1, "sequential")
    for key in ("test/acc", "procedure/best_val_loss", "procedure/ensemble_test_nll"):
        assert stacked.metrics[key] == pytest.approx(alone.metrics[key], rel=1e-4, abs=1e-5), key
    run = next(iter(tracker.search("v", {"complete": "1"})))
    assert run.data.tags["execution"] == "vectorized"
    assert run.data.metrics["epochs_run"] == 6 and run.data.metrics["time/fit_s"] > 0
