"""params.yaml validation: one clear error naming the key and the allowed values, exit code 2, and
nothing written to MLflow or Optuna."""

from __future__ import annotations

import pytest
from conftest import write_params

from techbench.cli import main
from techbench.config import parse_params
from techbench.errors import ConfigError
from techbench.techniques import OPTIMIZERS


def test_valid_params_resolve_registry_defaults(raw_params):
    params = parse_params(raw_params)
    adam = params.studies["optimizers"].run("adam")
    assert adam.components["optimizer"] == {
        "name": "adam",
        "lr": 0.001,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
    }
    assert adam.model["hidden"] == [16]
    assert adam.config_hash() != params.studies["optimizers"].run("sgd").config_hash()


def test_the_repository_params_file_is_valid():
    from pathlib import Path

    from techbench.config import load_params

    params = load_params(Path(__file__).parents[1] / "params.yaml")
    optimizers = params.studies["optimizers"]
    for key in ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "radam", "lookahead"]:
        assert key in optimizers.techniques
    assert {"lamb", "lars", "lbfgs", "newton", "sgd+gc"} <= set(optimizers.techniques)
    assert len(optimizers.workloads) >= 3 and params.studies["gradient_computation"].probes


def _error(raw) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_params(raw)
    return info.value


def test_unknown_technique_lists_allowed(raw_params):
    raw_params["studies"]["optimizers"]["techniques"].append("adamx")
    err = _error(raw_params)
    assert err.key == "studies.optimizers.techniques[2]"
    assert "adamx" in str(err) and err.allowed == OPTIMIZERS.names()


def test_unknown_key_lists_allowed(raw_params):
    raw_params["studies"]["optimizers"]["train"]["epoch"] = 3
    err = _error(raw_params)
    assert err.key == "studies.optimizers.train.epoch" and "epochs" in err.allowed


def test_negative_learning_rate(raw_params):
    raw_params["studies"]["optimizers"]["technique_params"] = {"adam": {"lr": -0.1}}
    err = _error(raw_params)
    assert err.key == "studies.optimizers.technique_params.adam.lr" and "> 0" in str(err)


def test_zero_seeds(raw_params):
    raw_params["studies"]["optimizers"]["seeds"] = 0
    assert _error(raw_params).key == "studies.optimizers.seeds"


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        (("hardware", "precision"), "8-bit", "hardware.precision"),
        (("studies", "optimizers", "family"), "optimisers", "studies.optimizers.family"),
        (
            ("studies", "optimizers", "model"),
            {"name": "mlp", "activation": "swishy"},
            "studies.optimizers.model",
        ),
        (
            ("studies", "optimizers", "data"),
            {"name": "image_folder", "path": "/no/such/dir"},
            "studies.optimizers.data",
        ),
        (("studies", "optimizers", "train"), {"batch_size": 0}, "studies.optimizers.train.batch_size"),
        (("studies", "optimizers", "train"), {"epochs": 2.5}, "studies.optimizers.train.epochs"),
        (("tuning",), {"optimizers": {"techniques": ["rmsprop"]}}, "tuning.optimizers.techniques[0]"),
        (("studies", "optimizers", "colour"), "blue", "studies.optimizers.colour"),
    ],
)
def test_bad_values_name_their_key(raw_params, path, value, key):
    node = raw_params
    for p in path[:-1]:
        node = node.setdefault(p, {})
    node[path[-1]] = value
    assert _error(raw_params).key == key


@pytest.mark.parametrize("command", [["run", "optimizers"], ["tune", "optimizers", "adam"]])
def test_cli_exits_2_and_writes_nothing(workdir, raw_params, capsys, command):
    raw_params["studies"]["optimizers"]["techniques"].append("adamx")
    write_params(workdir / "params.yaml", raw_params)
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "studies.optimizers.techniques[2]" in err and "allowed: adagrad, " in err and "adamw" in err
    assert not (workdir / "mlflow.db").exists() and not (workdir / "optuna.db").exists()
    assert not (workdir / "results").exists() and not (workdir / "reports").exists()


def test_cli_unknown_study(workdir, raw_params, capsys):
    write_params(workdir / "params.yaml", raw_params)
    assert main(["run", "optimisers"]) == 2
    assert "allowed: optimizers" in capsys.readouterr().err


def test_the_full_gpu_setting_is_a_valid_overlay_of_only_what_differs():
    from pathlib import Path

    from techbench.config import load_params, read_yaml
    from techbench.config.overlay import redundant

    root = Path(__file__).parents[1]
    params = load_params(root / "params.yaml", [root / "configs" / "full.yaml"])
    assert params.hardware["accelerator"] == "gpu" and all(s.seeds >= 10 for s in params.studies.values())
    # the GPU setting keeps every default study and may add some (a timm CNN source is affordable there)
    assert set(params.studies) >= set(load_params(root / "params.yaml").studies)
    assert redundant(read_yaml(root / "params.yaml"), read_yaml(root / "configs" / "full.yaml")) == []


def test_overlay_merges_mappings_replaces_lists_and_null_removes():
    from techbench.config import merge

    base = {"a": {"x": 1, "y": [1, 2]}, "b": 2, "c": {"z": 1}}
    out = merge(base, {"a": {"y": [3]}, "b": None, "c": {"w": 2}})
    assert out == {"a": {"x": 1, "y": [3]}, "c": {"z": 1, "w": 2}} and base["b"] == 2


def test_overlay_command_writes_the_merged_valid_file(workdir, raw_params):
    write_params(workdir / "params.yaml", raw_params)
    (workdir / "more.yaml").write_text("studies:\n  optimizers:\n    seeds: 5\n")
    assert main(["overlay", "more.yaml", "-o", "merged.yaml"]) == 0
    from techbench.config import load_params

    assert load_params(workdir / "merged.yaml").studies["optimizers"].seeds == 5
    (workdir / "bad.yaml").write_text("studies:\n  optimizers:\n    seeds: 0\n")
    assert main(["overlay", "bad.yaml", "-o", "never.yaml"]) == 2 and not (workdir / "never.yaml").exists()


def test_base_cannot_set_the_slot_the_study_varies(raw_params):
    raw_params["studies"]["optimizers"]["base"] = {"optimizer": {"name": "sgd"}}
    err = _error(raw_params)
    assert err.key == "studies.optimizers.base.optimizer" and "technique_params" in str(err)


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"model": {"name": "mlp", "hidden": [-8]}}, "studies.optimizers.model"),
        ({"train": {"epochs": 0}}, "studies.optimizers.train.epochs"),
        ({"sweep": {"optimizer.lrr": [0.1]}}, "studies.optimizers.sweep.optimizer.lrr"),
        ({"sweep": {"optimizer.lr": []}}, "studies.optimizers.sweep.optimizer.lr"),
        ({"probes": {"quadratic_gdd": {}}}, "studies.optimizers.probes.quadratic_gdd"),
    ],
)
def test_impossible_values_are_config_errors(raw_params, patch, key):
    raw_params["studies"]["optimizers"].update(patch)
    assert _error(raw_params).key.startswith(key)


def test_accumulation_needs_at_least_one_micro_batch(raw_params):
    raw_params["studies"]["optimizers"] = {
        **raw_params["studies"]["optimizers"],
        "family": "batching",
        "techniques": ["accumulate"],
        "technique_params": {"accumulate": {"k": 0}},
    }
    assert _error(raw_params).key == "studies.optimizers.technique_params.accumulate.k"


def test_impossible_combinations_stop_before_anything_is_written(workdir, raw_params, capsys):
    """Newton's exact Hessian on a model over its parameter limit is found by building every model and
    optimizer before the first run: exit 2, and no MLflow database is even created."""
    study = raw_params["studies"]["optimizers"]
    study.update(techniques=["sgd", "newton"], model={"name": "mlp", "hidden": [512]})
    write_params(workdir / "params.yaml", raw_params)
    assert main(["run", "optimizers"]) == 2
    err = capsys.readouterr().err
    assert "studies.optimizers.workloads.debug_mlp" in err and "max_params=5000" in err
    assert not (workdir / "mlflow.db").exists()


def test_a_bad_probe_setting_stops_the_study_before_training(workdir, raw_params, capsys):
    raw_params["studies"]["optimizers"]["probes"] = {"lr_range_test": {"min_lr": 1.0, "max_lr": 0.5}}
    write_params(workdir / "params.yaml", raw_params)
    assert main(["run", "optimizers"]) == 2
    assert "studies.optimizers.probes.lr_range_test" in capsys.readouterr().err
    from techbench.tracking import Tracker

    assert not list(Tracker().search("optimizers", {}, finished_only=False))


def test_a_procedure_in_base_of_another_study_is_an_error(raw_params):
    """Outside a restart study the restart slot trains one ordinary run: naming a procedure there would record
    what never ran."""
    raw_params["studies"]["optimizers"]["base"] = {"restart": {"name": "random_restarts"}}
    err = _error(raw_params)
    assert err.key == "studies.optimizers.base.restart" and err.allowed == ["single"]


def test_a_technique_no_workload_runs_is_an_error(raw_params):
    study = raw_params["studies"]["optimizers"]
    study.update(techniques=["sgd", "adam", "adamw"], workloads={"w": {"techniques": ["sgd", "adam"]}})
    err = _error(raw_params)
    assert err.key == "studies.optimizers.techniques[2]" and "runs on no workload" in str(err)


def test_tuning_a_technique_without_a_search_space_is_an_error(raw_params):
    from techbench.techniques import OPTIMIZERS

    raw_params["tuning"] = {"optimizers": {"techniques": ["sgd"]}}

    assert OPTIMIZERS.get("lbfgs").search_space  # every built-in optimizer is tunable: register one that is not
    with OPTIMIZERS.temporary():
        OPTIMIZERS.register("fixed", description="a fixed-step method")(lambda model: None)
        raw_params["studies"]["optimizers"]["techniques"].append("fixed")
        raw_params["tuning"]["optimizers"]["techniques"] = ["sgd", "fixed"]
        err = _error(raw_params)
    assert err.key == "tuning.optimizers.techniques[1]" and "no search space" in str(err)


def test_baseline_defaults_to_the_family_default_and_must_be_a_configuration_of_the_study(raw_params):
    study = raw_params["studies"]["optimizers"]
    assert parse_params(raw_params).study("optimizers").baselines == {"debug_mlp": "adam"}  # the family's default
    study["baseline"] = "sgd"
    assert parse_params(raw_params).study("optimizers").baselines == {"debug_mlp": "sgd"}
    study["baseline"] = "momentum"  # a registered optimizer the study does not run
    err = _error(raw_params)
    assert err.key == "studies.optimizers.baseline" and err.allowed == ["sgd", "adam"]
    study["baseline"] = "sgd"
    study["sweep"] = {"optimizer.lr": [0.01, 0.1]}
    err = _error(raw_params)  # swept: the baseline is one point of the sweep
    assert err.allowed == ["sgd@lr=0.01", "sgd@lr=0.1", "adam@lr=0.01", "adam@lr=0.1"]
    study["baseline"] = "sgd@lr=0.1"
    assert parse_params(raw_params).study("optimizers").baselines == {"debug_mlp": "sgd@lr=0.1"}
