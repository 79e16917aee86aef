"""The generalization studies end to end on a tiny workload, with a real MLflow store: early stopping's
stop epochs and best-vs-last weights, the bias²/variance decomposition of saved predictions, MC-dropout and
learned-rate metrics, sparsity of the penalties, and the report sentences built from them."""

from __future__ import annotations

import json

import pytest
import torch

from techbench.config import parse_params
from techbench.errors import ConfigError
from techbench.tracking import Tracker

DEBUG = {"name": "debug", "num_samples": 400}
MLP = {"name": "mlp", "hidden": [32]}


def _params():
    return parse_params(
        {
            "studies": {
                "capacity": {
                    "family": "regularizer",
                    "techniques": ["none"],
                    "seeds": 3,
                    "data": {**DEBUG, "train_size": 100, "resample": True},
                    "model": MLP,
                    "train": {"epochs": 4, "batch_size": 32, "save_predictions": True},
                    "workloads": {"width": {"sweep": {"model.hidden": [[2], [8], [32]]}}},
                },
                "regularization": {
                    "family": "regularizer",
                    "techniques": ["none", "l2", "l1_proximal"],
                    "seeds": 2,
                    "data": DEBUG,
                    "model": MLP,
                    "train": {"epochs": 4, "batch_size": 32},
                    "base": {"optimizer": {"name": "sgd", "lr": 0.1}},
                    "sweep": {"l2.lam": [1.0, 10.0, 100.0], "l1_proximal.lam": [300.0]},
                },
                "early_stopping": {
                    "family": "stopping",
                    "techniques": ["fixed_budget", "patience"],
                    "seeds": 2,
                    # Few, noisy labels and a large LR: the validation loss turns up within a few epochs.
                    "data": {**DEBUG, "train_size": 60, "label_noise": 0.4},
                    "model": {"name": "mlp", "hidden": [128]},
                    "train": {"epochs": 40, "batch_size": 20},
                    "base": {"optimizer": {"name": "adam", "lr": 0.01}},
                    "technique_params": {"patience": {"patience": 2}},
                },
                "dropout": {
                    "family": "dropout",
                    "techniques": ["none", "mc_dropout", "concrete"],
                    "seeds": 2,
                    "data": DEBUG,
                    "model": MLP,
                    "train": {"epochs": 3, "batch_size": 32, "target_val_acc": 0.3},
                    "technique_params": {"mc_dropout": {"p": 0.3, "samples": 5}},
                },
            }
        }
    )


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    from techbench.report.render import write_reports
    from techbench.study import export_study, run_study

    root = tmp_path_factory.mktemp("gen")
    params = _params()
    tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}")
    for study in params.studies:
        run_study(params, study, tracker=tracker)
        export_study(params, study, tracker=tracker, root=root / "results")
    write_reports(root / "results", root / "reports", root / "no-benchmarks")
    runs = {s: json.loads((root / "results" / s / "runs.json").read_text())["runs"] for s in params.studies}
    return root, runs


def _m(row, metric):
    """A run's final metric, as its results row holds it."""
    return row["metrics"].get(metric)


def _rows(runs, label):
    out = [
        r
        for r in runs
        if (r["technique"] if r["variant"] == "default" else f"{r['technique']}@{r['variant']}") == label
    ]
    assert out, label
    return out


def test_early_stopping_records_stop_epoch_and_best_vs_last_weights(done):
    root, runs = done
    for r in _rows(runs["early_stopping"], "patience"):
        assert _m(r, "stop/fired") == 1 and _m(r, "stop/epoch") == r["epochs_run"] < 40
        assert _m(r, "stop/epochs_saved") == 40 - r["epochs_run"]
        assert _m(r, "stop/best_epoch") == _m(r, "stop/epoch") - 2  # patience 2 after the best epoch
        assert r["test_acc"] == pytest.approx(
            _m(r, "stop/test_acc_best")
        )  # restore_best: the run keeps the best weights
    for r in _rows(runs["early_stopping"], "fixed_budget"):
        assert r["epochs_run"] == 40 and _m(r, "stop/fired") == 0 and _m(r, "stop/epochs_saved") == 0
        assert r["test_acc"] == pytest.approx(_m(r, "stop/test_acc_last"))  # keeps the last weights
        # Same seed, same curve: patience's best epoch is the fixed budget's best epoch if it came before the stop.
    md = (root / "reports/early_stopping.md").read_text()
    assert "stopped at epoch" in md and "best-validation weights − last weights" in md
    assert (root / "reports/figures/early_stopping_debug_mlp_stops.png").is_file()


def test_capacity_study_decomposes_test_error_over_resampled_training_sets(done):
    root, runs = done
    metrics = json.loads((root / "results/capacity/metrics.json").read_text())
    parts = metrics["bias_variance"]["width"]
    assert set(parts) == {"none@hidden=2", "none@hidden=8", "none@hidden=32"}
    for p in parts.values():
        assert p["runs"] == 3 and p["variance"] > 0
        assert p["brier"] == pytest.approx(p["bias2"] + p["variance"], abs=1e-5)
    # resample: every seed trained on its own draw of the training set, recorded as n_train = 100
    assert {r["n_train"] for r in runs["capacity"]} == {100.0}
    md = (root / "reports/capacity.md").read_text()
    assert "Spearman ρ(bias², parameters)" in md and "Capacity axis: parameters" in md
    assert "Claim C14 (" in md and "ρ(train error, capacity)" in md  # decided on the parameter axis


def test_penalties_report_sparsity_and_best_lambda_on_validation(done):
    root, runs = done
    prox = _rows(runs["regularization"], "l1_proximal@lam=300")
    l2 = _rows(runs["regularization"], "l2@lam=1")
    assert min(_m(r, "weights/zero_frac") for r in prox) > 0.1 > max(_m(r, "weights/zero_frac") for r in l2)
    strong, weak = _rows(runs["regularization"], "l2@lam=10"), l2
    assert all(_m(s, "weights/l2_norm") < _m(w, "weights/l2_norm") for s, w in zip(strong, weak, strict=True))
    md = (root / "reports/regularization.md").read_text()
    assert "Best λ per penalty (selected on validation accuracy" in md and "exact zeros %" in md
    assert "‖W‖ nan" not in md and "exact zeros nan" not in md  # the sentences read the logged weight metrics
    assert "Claim C17 (" in md and "λ ∈ {0, 1, 10, 100}" in md  # the unpenalized run is the sweep's λ = 0


def test_mc_dropout_and_concrete_rates_are_measured(done):
    root, runs = done
    for r in _rows(runs["dropout"], "mc_dropout"):
        assert (
            0 <= _m(r, "mc/test_acc") <= 1
            and _m(r, "mc/test_nll") > 0
            and 0 <= _m(r, "mc/test_ece") <= 1
            and 0 <= _m(r, "calibration/ece") <= 1
        )
    for r in _rows(runs["dropout"], "concrete"):
        assert set(r["learned_p"]) == {"layer0"} and 0 < r["learned_p"]["layer0"] < 1
    assert all(_m(r, "mc/test_acc") is None for r in _rows(runs["dropout"], "none"))
    md = (root / "reports/dropout.md").read_text()
    assert "MC average − deterministic" in md and "learned dropout rates" in md


def test_training_subsets_and_label_noise():
    from techbench.checks import component
    from techbench.workloads import DATASETS, load_dataset

    full = load_dataset(component("d", DATASETS, DEBUG))
    fixed = component("d", DATASETS, {**DEBUG, "train_size": 50, "label_noise": 0.5})
    a, b = load_dataset(fixed, seed=0), load_dataset(fixed, seed=1)
    assert len(a.x_train) == 50 and torch.equal(a.x_train, b.x_train)  # without resample the seed is ignored
    torch.testing.assert_close(a.x_test, full.x_test)
    torch.testing.assert_close(a.y_val, full.y_val)  # validation and test labels stay clean
    resampled = component("d", DATASETS, {**DEBUG, "train_size": 50, "resample": True})
    c, d = load_dataset(resampled, seed=0), load_dataset(resampled, seed=1)
    assert not torch.equal(c.x_train, d.x_train)
    assert torch.equal(c.x_train, load_dataset(resampled, seed=0).x_train)
    # label noise: about half of the labels differ from the clean labels of the same examples
    clean = {tuple(x.flatten().tolist()): int(y) for x, y in zip(full.x_train, full.y_train, strict=True)}
    flipped = [clean[tuple(x.flatten().tolist())] != int(y) for x, y in zip(a.x_train, a.y_train, strict=True)]
    assert 0.3 < sum(flipped) / len(flipped) < 0.7


def test_impossible_training_subset_exits_2_before_any_run(tmp_path, monkeypatch, capsys):
    import yaml

    from techbench.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    block = {"family": "dropout", "techniques": ["none"], "seeds": 1, "model": MLP}
    block["data"] = {**DEBUG, "train_size": 10_000}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"studies": {"s": block}}))
    assert main(["run", "s"]) == 2
    assert "train_size 10000 exceeds the training split" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(
    "technique,model,message",
    [("spatial", MLP, "convolution"), ("zoneout", MLP, "GRU")],
)
def test_dropout_that_does_not_fit_the_model_is_a_config_error(tmp_path, technique, model, message):
    from techbench.study import preflight

    params = parse_params(
        {"studies": {"s": {"family": "dropout", "techniques": [technique], "seeds": 1, "data": DEBUG, "model": model}}}
    )
    with pytest.raises(ConfigError, match=message):
        preflight(params.study("s"))
