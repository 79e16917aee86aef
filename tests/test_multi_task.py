"""Multi-task learning (probe multi_task): a shared trunk with a head per task against each task alone, on a real
Lightning Trainer with Lightning's CombinedLoader."""

from __future__ import annotations

import pytest
import torch
from conftest import write_params

from techbench.checks import component
from techbench.cli import main
from techbench.probes import ProbeContext
from techbench.probes.multi_task import fit_tasks, train_tasks
from techbench.workloads import load_dataset
from techbench.workloads.datasets import DATASETS

DATA = {"name": "debug", "num_samples": 256}
MODEL = {"name": "mlp", "hidden": [16], "activation": "relu", "dropout": 0.0, "pretrained_file": ""}


def _ctx(seed: int = 0) -> ProbeContext:
    return ProbeContext(data=DATA, model=MODEL, train={}, hardware={"accelerator": "cpu"}, components={}, seed=seed)


def _tasks():
    big = load_dataset(component("a", DATASETS, DATA))
    small = load_dataset(component("b", DATASETS, {**DATA, "noise": 0.9, "data_seed": 1, "train_size": 60}))
    return {"a": big, "b": small}


def test_a_task_weighted_zero_leaves_the_other_exactly_as_if_trained_alone():
    datas = _tasks()
    fit = {"epochs": 3, "batch": 32, "lr": 0.01, "seed": 0, "orders": {"a": 0, "b": 1}}
    alone = fit_tasks(_ctx(), {"a": datas["a"]}, {"a": 1.0}, **fit)
    ignored = fit_tasks(_ctx(), datas, {"a": 1.0, "b": 0.0}, **fit)
    shared = fit_tasks(_ctx(), datas, {"a": 1.0, "b": 1.0}, **fit)

    def trunk_and_head(m):
        return {**m.trunk.state_dict(), **{f"head.{k}": v for k, v in m.heads["a"].state_dict().items()}}

    # Σ wᵢLᵢ with w_b = 0: task b's batches move nothing but its own head (whose gradient is zero too)
    same = trunk_and_head(alone), trunk_and_head(ignored)
    assert all(torch.equal(same[0][k], same[1][k]) for k in same[0])
    moved = trunk_and_head(shared)
    assert not all(torch.equal(same[0][k], moved[k]) for k in moved)  # with w_b = 1 the shared trunk learns b too
    scores = train_tasks(_ctx(), datas, {"a": 1.0, "b": 1.0}, **fit)
    assert set(scores) == {"a", "b"} and all(0.0 <= v <= 1.0 for v in scores.values())


def test_the_multi_task_study_reports_each_task_alone_and_shared(workdir, capsys):
    probe = {"tasks": {"a": {}, "b": {"noise": 0.9, "data_seed": 1}}, "epochs": 2}
    raw = {
        "studies": {
            "mt": {"seeds": 2, "data": DATA, "model": {"name": "mlp", "hidden": [16]}, "probes": {"multi_task": probe}}
        }
    }
    write_params(workdir / "params.yaml", raw)
    assert main(["run", "mt"]) == 0
    assert main(["report"]) == 0
    md = (workdir / "reports" / "mt.md").read_text()
    assert "a: single-task" in md and "b: multi-task" in md
    assert "`b`: multi-task − single-task" in md and "paired over 2 seeds" in md


@pytest.mark.parametrize(
    ("probe", "message"),
    [({"tasks": {"a": {}}}, "two or more tasks"), ({"tasks": {"a": {}, "b": {}}, "weights": {"c": 1}}, "unknown")],
)
def test_impossible_multi_task_settings_stop_before_anything_is_written(workdir, capsys, probe, message):
    raw = {"studies": {"mt": {"seeds": 1, "data": DATA, "model": {"name": "mlp"}, "probes": {"multi_task": probe}}}}
    write_params(workdir / "params.yaml", raw)
    assert main(["run", "mt"]) == 2
    err = capsys.readouterr().err
    assert "multi_task" in err and message in err and not (workdir / "mlflow.db").exists()
