"""Optuna with a real sqlite storage: seeded TPE over the registry's search space, pruning, one MLflow
parent run with a child per trial, resume up to the budget, and the tuned configuration re-run over seeds."""

from __future__ import annotations

import json

import optuna

from techbench.cli import main
from techbench.tracking import Tracker
from techbench.trial_store import storage_url


def test_tune_command_on_the_debug_workload(workdir, raw_params):
    from conftest import write_params

    raw_params["tuning"] = {"optimizers": {"techniques": ["adam"], "trials": 4}}
    write_params(workdir / "params.yaml", raw_params)
    assert main(["-q", "tune", "optimizers"]) == 0

    summaries = optuna.get_all_study_summaries(storage_url())
    assert len(summaries) == 1 and summaries[0].study_name.startswith("optimizers/adam/")
    study = optuna.load_study(study_name=summaries[0].study_name, storage=storage_url())
    assert len(study.trials) == 4
    assert set(study.best_params) == {"lr"} and 1e-5 <= study.best_params["lr"] <= 1e-1
    # What optuna-dashboard shows: a named objective, the study's identity, every trial's MLflow runs.
    assert summaries[0].study_name.startswith("optimizers/adam/debug_mlp/")
    assert study.metric_names == ["val_kept_acc"]
    assert {k: study.user_attrs[k] for k in ("study", "technique", "workload")} == {
        "study": "optimizers",
        "technique": "adam",
        "workload": "debug_mlp",
    }
    assert all(t.user_attrs["mlflow_run_ids"] for t in study.trials)  # pruned trials included
    trials = json.loads((workdir / "results" / "optimizers" / "trials.json").read_text())["adam"]
    assert [t["number"] for t in trials] == [0, 1, 2, 3]
    assert [t["mlflow_run_ids"] for t in trials] == [t.user_attrs["mlflow_run_ids"] for t in study.trials]

    tracker = Tracker()
    parent = next(tracker.search("optimizers", {"kind": "tuning"}))
    children = list(tracker.search("optimizers", {"mlflow.parentRunId": parent.info.run_id}, finished_only=False))
    assert sorted(c.data.tags["kind"] for c in children) == ["run"] * 2 + ["trial"] * 4  # re-runs: its children too
    children = [c for c in children if c.data.tags["kind"] == "trial"]
    assert {c.data.tags["outcome"] for c in children} <= {"completed", "pruned", "diverged"}
    assert float(parent.data.metrics["best/val_acc"]) == study.best_value

    summary = json.loads((workdir / "results" / "optimizers" / "tuning.json").read_text())["adam"]
    assert summary["best_params"] == study.best_params and summary["trials"] == 4
    assert len(summary["runs"]) == 2 and all(r["variant"] == "tuned" for r in summary["runs"])

    # Resuming with a larger budget adds only the missing trials; the tuned runs are not repeated.
    assert main(["-q", "tune", "optimizers", "adam", "--trials", "5"]) == 0
    assert len(optuna.load_study(study_name=summaries[0].study_name, storage=storage_url()).trials) == 5
    resumed = optuna.load_study(study_name=summaries[0].study_name, storage=storage_url())
    tuned = list(tracker.search("optimizers", {"variant": "tuned"}))
    # Same best configuration -> its seeds are already FINISHED and are not trained again.
    assert len(tuned) == (2 if resumed.best_params == study.best_params else 4)


def test_tuning_budgets_are_nested_prefixes_of_one_study_each_re_run_on_the_evaluation_seeds(workdir, raw_params):
    """budgets {small: 2, large: 5}: one study of 5 trials; small's choice is the best of trials 0-1 — what a
    study of 2 trials alone chooses (same sampler seed) — and each budget's best is re-run over the study's seeds,
    once per distinct trial."""
    from conftest import write_params

    from techbench.config import load_params
    from techbench.tuning import best_within, tune

    raw_params["tuning"] = {"optimizers": {"techniques": ["sgd"], "budgets": {"large": 5, "small": 2}}}
    write_params(workdir / "params.yaml", raw_params)
    assert main(["-q", "tune", "optimizers"]) == 0
    summary = json.loads((workdir / "results" / "optimizers" / "tuning.json").read_text())["sgd"]
    assert list(summary["budgets"]) == ["small", "large"] and summary["trials"] == 5
    study = optuna.load_study(study_name=summary["optuna_study"], storage=storage_url())
    small, large = summary["budgets"]["small"], summary["budgets"]["large"]
    assert small["best_trial"] in (0, 1) and large["best_trial"] == study.best_trial.number
    assert small["best_val_acc"] == max(t.value for t in study.trials[:2] if t.value is not None)
    alone = tune(
        load_params(workdir / "params.yaml").study("optimizers").run("sgd"),
        2,
        seed=1000,
        storage=f"sqlite:///{workdir / 'alone.db'}",
        tracker=Tracker(),
    )
    assert [t.params for t in alone.trials] == [t.params for t in study.trials[:2]]
    assert best_within(alone, 2).params == small["best_params"]
    assert all(len(b["runs"]) == 2 for b in (small, large))  # the study's 2 seeds
    shared = small["best_trial"] == large["best_trial"]
    assert (small["variant"] == large["variant"]) == shared
    reruns = {
        r.info.run_id for r in Tracker().search("optimizers", {"kind": "run"}) if "tuned" in r.data.tags["variant"]
    }
    assert len(reruns) == (2 if shared else 4)


def test_budgets_and_trials_are_exclusive_and_budgets_must_be_positive_integers(raw_params):
    import pytest

    from techbench.config import parse_params
    from techbench.errors import ConfigError

    for block, key in [
        ({"techniques": ["sgd"], "budgets": {"small": 0}}, "tuning.optimizers.budgets.small"),
        ({"techniques": ["sgd"], "budgets": {"one_shot": 3}}, "tuning.optimizers.budgets.one_shot"),
        ({"techniques": ["sgd"], "budgets": {"small": 3}, "trials": 4}, "tuning.optimizers.trials"),
    ]:
        raw_params["tuning"] = {"optimizers": block}
        with pytest.raises(ConfigError) as info:
            parse_params(raw_params)
        assert info.value.key == key
    raw_params["tuning"] = {"optimizers": {"techniques": ["sgd"], "budgets": {"large": 32, "small": 8}}}
    spec = parse_params(raw_params).tuning["optimizers"]
    assert spec.budgets == {"small": 8, "large": 32} and spec.trials == 32
