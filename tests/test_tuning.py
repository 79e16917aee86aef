"""Optuna with a real sqlite storage: seeded TPE over the registry's search space, pruning, one MLflow
parent run with a child per trial, resume up to the budget, and the tuned configuration re-run over seeds."""

from __future__ import annotations

import json

import optuna

from techbench.cli import main
from techbench.tracking import Tracker
from techbench.tuning import storage_url


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

    tracker = Tracker()
    parent = next(tracker.search("optimizers", {"kind": "tuning"}))
    children = list(tracker.search("optimizers", {"mlflow.parentRunId": parent.info.run_id}, finished_only=False))
    assert len(children) == 4
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
