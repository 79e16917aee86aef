"""A real MLflow sqlite store: run identity, names, tags, metrics, resume without duplicates, and reports
that read only the runs of the current configuration."""

from __future__ import annotations

import json

from techbench.config import parse_params
from techbench.study import export_study, run_study
from techbench.tracking import Tracker


def test_runs_are_named_tagged_and_logged_per_epoch(workdir, raw_params):
    params = parse_params(raw_params)
    tracker = Tracker()
    assert run_study(params, "optimizers", tracker=tracker) == 4
    exp = tracker.client.get_experiment_by_name("optimizers")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # MLflow's model-training view
    runs = tracker.client.search_runs([exp.experiment_id], "tags.kind = 'run'")
    assert sorted(r.info.run_name for r in runs) == [
        "adam/debug_mlp/seed0",
        "adam/debug_mlp/seed1",
        "sgd/debug_mlp/seed0",
        "sgd/debug_mlp/seed1",
    ]
    run = next(r for r in runs if r.info.run_name == "adam/debug_mlp/seed1")
    dataset = tracker.client.get_run(run.info.run_id).inputs.dataset_inputs[0].dataset
    assert dataset.name == "debug" and dataset.source_type == "generator" and '"num_samples"' in dataset.source
    tags = run.data.tags
    assert tags["study"] == "optimizers" and tags["technique"] == "adam" and tags["seed"] == "1"
    assert tags["config_hash"] == params.studies["optimizers"].run("adam").config_hash()
    assert "cores" in tags["machine"] and "torch" in tags["machine"]  # the training machine, for the report
    assert "git_commit" in tags and tags["outcome"] == "completed"
    assert run.info.status == "FINISHED"
    assert run.data.params["optimizer.lr"] == "0.001" and run.data.params["train.epochs"] == "3"
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "lr", "time/epoch_s"):
        steps = [m.step for m in tracker.client.get_metric_history(run.info.run_id, key)]
        assert steps == [0, 1, 2], key  # one value per epoch, step = epoch
    assert {"test/acc", "test/loss"} <= set(run.data.metrics)


def test_interrupted_study_resumes_without_duplicates(workdir, raw_params):
    params = parse_params(raw_params)
    tracker = Tracker()
    assert run_study(params, "optimizers", tracker=tracker) == 4
    # Simulate an interruption: one run did not finish.
    victim = next(tracker.search("optimizers", {"technique": "sgd", "seed": "1"}))
    tracker.client.set_terminated(victim.info.run_id, "FAILED")
    assert run_study(params, "optimizers", tracker=tracker) == 1
    assert run_study(params, "optimizers", tracker=tracker) == 0
    assert len(list(tracker.search("optimizers", {"technique": "sgd", "seed": "1"}))) == 1
    assert run_study(params, "optimizers", force=True, tracker=tracker) == 4


def test_results_use_only_the_current_configuration(workdir, raw_params):
    tracker = Tracker()
    run_study(parse_params(raw_params), "optimizers", tracker=tracker)
    raw_params["studies"]["optimizers"]["train"]["epochs"] = 2  # a new configuration, old runs now stale
    params = parse_params(raw_params)
    run_study(params, "optimizers", tracker=tracker)
    out = export_study(params, "optimizers", tracker=tracker)
    runs = json.loads((out / "runs.json").read_text())["runs"]
    assert len(runs) == 4 and all(len(r["curves"]["val/acc"]) == 2 for r in runs)
    current = {params.studies["optimizers"].run(t).config_hash() for t in ("sgd", "adam")}
    assert {tracker.client.get_run(r["run_id"]).data.tags["config_hash"] for r in runs} == current
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["debug_mlp"]["adam"]["n"] == 2 and 0 <= metrics["debug_mlp"]["adam"]["test_acc_mean"] <= 1
    plot = (out / "plots" / "debug_mlp.csv").read_text().splitlines()
    assert plot[0] == "epoch,config,train_loss,val_loss,val_acc,lr" and {p.split(",")[1] for p in plot[1:]} == {
        "adam",
        "sgd",
    }


def test_a_run_interrupted_after_fit_is_not_taken_as_finished(workdir, raw_params):
    """Lightning marks a run FINISHED when fit ends, before the test metrics are logged; only the `complete`
    tag written last makes it count, so an interruption in between is re-run on resume."""
    from techbench.study import pending_runs

    params = parse_params(raw_params)
    cfg = params.studies["optimizers"].run("sgd")
    tracker = Tracker()
    run = tracker.client.create_run(
        tracker.experiment_id("optimizers"), tags={"config_hash": cfg.config_hash(), "seed": "0"}
    )
    tracker.client.set_terminated(run.info.run_id, "FINISHED")
    assert list(pending_runs(tracker, [(cfg, 0)], force=False)) == [(cfg, 0)]
    tracker.client.set_tag(run.info.run_id, "complete", "1")
    assert list(pending_runs(tracker, [(cfg, 0)], force=False)) == []


def test_code_version_ignores_the_reporting_code(tmp_path):
    """Changing how finished runs are summarized or reported must not retrain them; changing training must."""
    from techbench import source_hash

    for rel in ("training/run.py", "report/render.py", "analysis/stats.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    before = source_hash(tmp_path)
    (tmp_path / "report/render.py").write_text("x = 2\n")
    (tmp_path / "analysis/stats.py").write_text("x = 2\n")
    assert source_hash(tmp_path) == before
    (tmp_path / "training/run.py").write_text("x = 2\n")
    assert source_hash(tmp_path) != before


def test_stores_resolve_to_the_project_root_inside_a_dvc_experiment_copy(tmp_path):
    """`dvc exp run --temp` / `--queue` run a stage in <root>/.dvc/tmp/exps/...: relative store URLs must name
    the project's mlflow.db / optuna.db, not a throwaway file deleted with the copy."""
    from techbench.tracking import absolute_sqlite, project_root

    copy = tmp_path / ".dvc" / "tmp" / "exps" / "standalone" / "tmpab12"
    copy.mkdir(parents=True)
    assert project_root(copy) == tmp_path.resolve()
    assert absolute_sqlite("sqlite:///mlflow.db", copy) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert absolute_sqlite("sqlite:///optuna.db", tmp_path) == f"sqlite:///{tmp_path.resolve() / 'optuna.db'}"
    assert absolute_sqlite("sqlite:////abs/x.db", copy) == "sqlite:////abs/x.db"
    assert absolute_sqlite("postgresql://h/db", copy) == "postgresql://h/db"


def test_each_configuration_is_a_parent_run_with_its_seeds_and_their_aggregate(workdir, raw_params):
    """The MLflow UI compares techniques on parent runs (kind group): children = the seeds, metrics = mean and
    95% CI over them, equal to the results' own numbers; a resumed study does not make a second parent."""
    from techbench.analysis.stats import mean_ci

    params = parse_params(raw_params)
    tracker = Tracker()
    run_study(params, "optimizers", tracker=tracker)
    export_study(params, "optimizers", tracker=tracker)
    export_study(params, "optimizers", tracker=tracker)  # again: the same parents, updated
    groups = {g.data.tags["technique"]: g for g in tracker.search("optimizers", {"kind": "group"})}
    assert sorted(groups) == ["adam", "sgd"]
    adam = groups["adam"]
    assert adam.info.run_name == "adam/debug_mlp" and "2 seeds" in adam.data.tags["mlflow.note.content"]
    children = list(tracker.search("optimizers", {"mlflow.parentRunId": adam.info.run_id}))
    assert sorted(c.data.tags["seed"] for c in children) == ["0", "1"]
    est = mean_ci([c.data.metrics["test/acc"] for c in children])
    assert adam.data.metrics["test/acc_mean"] == est.mean and adam.data.metrics["seeds"] == 2
    assert adam.data.metrics["test/acc_ci95_low"] == est.low and adam.data.metrics["test/acc_ci95_high"] == est.high
    assert tracker.finished_run("optimizers", adam.data.tags["group_of"], 0).info.run_id != adam.info.run_id
