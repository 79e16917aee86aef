"""Bad input found by trying the CLI as a new user would: each is one line on stderr naming the key (and the
allowed values where there is a finite set), exit code 2, and nothing created in MLflow, Optuna or results."""

from __future__ import annotations

import pytest
import torch
from conftest import write_params

from techbench.cli import main

NO_GPU = not torch.cuda.is_available()


def _study(raw, **patch):
    raw["studies"]["optimizers"].update(patch)
    return raw


CASES = {
    "model.channels 0": (lambda r: _study(r, model={"name": "cnn1d", "channels": 0}), ["model.channels", ">= 1"]),
    "gru hidden 0": (lambda r: _study(r, model={"name": "gru", "hidden": 0}), ["model.hidden", ">= 1"]),
    "epochs -1": (lambda r: _study(r, train={"epochs": -1}), ["train.epochs", "must be >= 1"]),
    "seeds 2.5": (lambda r: _study(r, seeds=2.5), ["studies.optimizers.seeds", "expected an integer"]),
    "seeds true": (lambda r: _study(r, seeds=True), ["studies.optimizers.seeds", "expected an integer"]),
}
if NO_GPU:
    CASES["gpu without one"] = (
        lambda r: {**r, "hardware": {"accelerator": "gpu"}},
        ["hardware.accelerator", "'gpu' is not available", "allowed: auto, cpu"],
    )
    CASES["fp16 on cpu"] = (
        lambda r: {**r, "hardware": {"precision": "16-mixed"}},
        ["hardware.precision", "needs a CUDA device", "allowed: 32-true, bf16-mixed"],
    )


def _assert_refused(workdir, capsys, argv, *expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for text in expected:
        assert text in err, err
    written = ("mlflow.db", "optuna.db", "results", "reports", "mlartifacts")
    assert not any((workdir / name).exists() for name in written)
    return err


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("command", [["run", "optimizers"], ["tune", "optimizers", "adam"]])
def test_bad_params_exit_2_naming_the_key(workdir, raw_params, capsys, case, command):
    patch, expected = CASES[case]
    write_params(workdir / "params.yaml", patch(raw_params))
    _assert_refused(workdir, capsys, command, *expected)


def test_a_yaml_syntax_error_is_one_line_with_its_position(workdir, capsys):
    (workdir / "params.yaml").write_text("studies:\n  optimizers: {family: optimizer\n  x: ]\n")
    err = _assert_refused(workdir, capsys, ["run", "optimizers"], "line 3, column 4", "not valid YAML")
    assert err.count("params.yaml") == 1, err


def test_an_overlay_error_names_the_overlay_file(workdir, raw_params, capsys):
    write_params(workdir / "params.yaml", raw_params)
    (workdir / "more.yaml").write_text("studies: [\n")
    err = _assert_refused(workdir, capsys, ["overlay", "more.yaml"], "error in more.yaml", "not valid YAML")
    assert "params.yaml" not in err


def test_a_class_folder_without_images_is_refused(workdir, raw_params, capsys):
    for cls in ("cats", "dogs"):
        (workdir / "imgs" / cls).mkdir(parents=True)
    (workdir / "imgs" / "dogs" / "notes.txt").write_text("not an image")
    data = {"name": "image_folder", "path": str(workdir / "imgs")}
    write_params(workdir / "params.yaml", _study(raw_params, data=data))
    _assert_refused(workdir, capsys, ["run", "optimizers"], "studies.optimizers.data", "cats, dogs", ".png")


def test_an_unknown_optuna_storage_is_refused(workdir, raw_params, capsys):
    write_params(workdir / "params.yaml", raw_params)
    argv = ["tune", "optimizers", "adam", "--storage", "nonsense://x"]
    _assert_refused(workdir, capsys, argv, "--storage", "nonsense://x", "allowed: sqlite:///optuna.db")


def test_an_unknown_mlflow_tracking_uri_is_refused(workdir, raw_params, capsys, monkeypatch):
    write_params(workdir / "params.yaml", raw_params)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuch://x")
    for argv in (["run", "optimizers"], ["tune", "optimizers", "adam"]):
        _assert_refused(workdir, capsys, argv, "error in the environment: MLFLOW_TRACKING_URI", "allowed: sqlite")


def test_a_batch_larger_than_the_split_is_recorded_as_the_split(raw_params):
    """batch_size: 10000000 trains on the whole split per step; the run records the batch that trained."""
    from techbench.config import parse_params
    from techbench.training.effective import resolve
    from techbench.workloads import load_dataset

    cfg = parse_params(_study(raw_params, train={"batch_size": 10_000_000})).studies["optimizers"].runs[0]
    data = load_dataset(cfg.data)
    run = resolve(cfg, data)
    assert run.train["batch_size"] == len(data.x_train) and run.steps_per_epoch == 1
