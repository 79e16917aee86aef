"""Optuna trials trained as one stack: each trial (its hyperparameters, its seeds) ends with the numbers of the same
configuration trained alone, is pruned alone, diverges alone, and is its own MLflow child run; configurations
that cannot stack run one trial at a time and say why."""

from __future__ import annotations

from dataclasses import replace

import optuna
import pytest
import torch

from techbench.config import parse_params
from techbench.errors import ConfigError
from techbench.tracking import Tracker

WORKLOAD = {
    "data": {"name": "debug"},
    "model": {"name": "mlp", "hidden": [16]},
    "train": {"epochs": 3, "batch_size": 32},
}


def _params(technique: str = "adam", **tuning):
    block = {"family": "optimizer", "techniques": [technique], "seeds": 2, **WORKLOAD}
    budget = {"techniques": [technique], "trials": 4, "stack": 4, "sampler": "random", **tuning}
    return parse_params({"studies": {"s": block}, "tuning": {"s": budget}})


def _same_run(a, b):
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    assert a.metrics["test/loss"] == pytest.approx(b.metrics["test/loss"], rel=1e-4)
    assert a.metrics["epochs_run"] == b.metrics["epochs_run"]


def test_a_stack_of_trials_gives_each_trial_its_own_numbers_and_mlflow_run(tmp_path):
    from techbench.training.single import train_single
    from techbench.tuning import tune_study

    params = _params(trial_seeds=2)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    summary = tune_study(params, "s", tracker=tracker, storage=storage, root=tmp_path)["adam"]
    assert summary["trials"] == 4
    study = optuna.load_study(study_name=summary["optuna_study"], storage=storage)
    runs = [tracker.read(r.info.run_id) for r in tracker.search("s", {"kind": "trial"})]
    assert len(runs) == 8  # 4 trials x 2 seeds, each its own child run
    assert {r.tags["trials_stacked"] for r in runs} == {"4"} and {r.tags["execution"] for r in runs} == {"vectorized"}
    lrs = {r.tags["optuna_trial"]: r.config["optimizer"]["lr"] for r in runs}
    assert len(set(lrs.values())) == 4  # each trial trained its own learning rate
    base = params.study("s").run("adam")
    for trial in study.trials:
        mine = [r for r in runs if r.tags["optuna_trial"] == str(trial.number)]
        assert sorted(trial.user_attrs["mlflow_run_ids"]) == sorted(r.run_id for r in mine)
        assert trial.value == pytest.approx(sum(r.histories["val/acc"][-1] for r in mine) / 2)
        cfg = base.with_technique_params(trial.params, variant=f"trial{trial.number}")
        alone = train_single(cfg, 1000)
        record = next(r for r in mine if r.seed == 1000)
        assert record.metrics["test/loss"] == pytest.approx(alone.metrics["test/loss"], rel=1e-4)
        assert record.histories["val/acc"] == pytest.approx(alone.histories["val/acc"], abs=1e-6)


class OddTrialsPruned(optuna.pruners.BasePruner):
    """Prunes every odd-numbered trial after its second epoch."""

    def prune(self, study, trial) -> bool:
        return trial.number % 2 == 1 and trial.last_step is not None and trial.last_step >= 1


def test_a_pruned_trial_stops_alone_and_keeps_the_weights_of_its_last_epoch():
    from techbench.training.single import train_single
    from techbench.trials import train_trials

    base = _params().study("s").run("adam")
    study = optuna.create_study(direction="maximize", pruner=OddTrialsPruned())
    asked = [study.ask() for _ in range(2)]
    cfgs = [
        base.with_technique_params({"lr": lr}, variant=f"t{t.number}")
        for t, lr in zip(asked, [0.01, 0.02], strict=True)
    ]
    kept, pruned = train_trials(cfgs, asked, [7], "sequential")
    assert not kept.pruned and pruned.pruned and pruned.results[0].outcome == "pruned"
    _same_run(kept.results[0], train_single(cfgs[0], 7))
    two_epochs = replace(cfgs[1], train={**cfgs[1].train, "epochs": 2})
    _same_run(pruned.results[0], train_single(two_epochs, 7))
    assert len(pruned.results[0].histories["val/acc"]) == 2


def test_a_diverging_member_stops_where_its_sequential_run_stops():
    from techbench.training.single import train_single
    from techbench.trials import train_trials

    base = _params("sgd").study("s").run("sgd")
    study = optuna.create_study(direction="maximize")
    asked = [study.ask() for _ in range(2)]
    cfgs = [
        base.with_technique_params({"lr": lr}, variant=f"t{t.number}") for t, lr in zip(asked, [0.05, 1e4], strict=True)
    ]
    fine, blown = train_trials(cfgs, asked, [3], "sequential")
    alone = train_single(cfgs[1], 3)
    assert alone.outcome == blown.results[0].outcome == "diverged"
    assert blown.results[0].diverged_step == alone.diverged_step
    assert blown.results[0].metrics["test/loss"] == pytest.approx(alone.metrics["test/loss"], rel=1e-4)
    assert blown.score == 0.0
    _same_run(fine.results[0], train_single(cfgs[0], 3))


def test_trials_that_cannot_stack_run_one_at_a_time_and_say_why(tmp_path, caplog):
    from techbench.tuning import tune_study

    params = _params("lbfgs", trials=2, stack=2)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with caplog.at_level("INFO", logger="techbench"):
        tune_study(params, "s", tracker=tracker, storage=f"sqlite:///{tmp_path / 'optuna.db'}", root=tmp_path)
    assert "lbfgs: trials one at a time (not stackable: optimizer lbfgs (no stacked update rule)" in caplog.text
    runs = [tracker.read(r.info.run_id) for r in tracker.search("s", {"kind": "trial"})]
    assert len(runs) == 2 and all(r.tags["stack_refused"].startswith("not stackable") for r in runs)
    assert {r.tags["trials_stacked"] for r in runs} == {"1"}


@pytest.mark.parametrize(
    "field,value,match",
    [("stack", 0, "tuning.s.stack"), ("trial_seeds", 1.5, "tuning.s.trial_seeds"), ("sampler", "tpee", "allowed: tpe")],
)
def test_bad_tuning_values_name_their_key(field, value, match):
    with pytest.raises(ConfigError, match=match):
        _params(**{field: value})


def test_the_report_shows_grouped_benchmark_measurements(tmp_path):
    import json

    from techbench.report.render import benchmarks_section

    (tmp_path / "stacked_trials.json").write_text(json.dumps({"machine": "cpu", "mlp": {"one_trial_s": 1.23456}}))
    section = benchmarks_section(tmp_path)
    assert section.tables[0].rows == [["machine", "cpu"], ["mlp.one_trial_s", "1.235"]]


def test_members_of_different_architectures_are_refused():
    from techbench.training.stacked import refusal

    block = {"family": "dropout", "techniques": ["standard"], "seeds": 1, **WORKLOAD}
    base = parse_params({"studies": {"d": block}}).study("d").run("standard")
    rate = base.with_technique_params({"p": 0.3}, variant="p")
    input_layer = base.with_technique_params({"p_input": 0.2}, variant="input")
    assert refusal([(base, 0), (rate, 0)]) is None  # another rate: the same layers
    assert refusal([(base, 0), (input_layer, 0)]) == "not stackable: the members' models differ in architecture"


@pytest.mark.parametrize(
    "family,technique,hp", [("regularizer", "elastic_net", "lam"), ("stopping", "patience", "patience")]
)
def test_penalty_and_stopping_trials_stack_with_their_own_hyperparameters(tmp_path, family, technique, hp):
    """A penalty's λ and a stopping rule's patience are tuned in one stack; each trial equals its run alone."""
    from techbench.training.single import train_single
    from techbench.tuning import tune_study

    block = {
        "family": family,
        "techniques": [technique],
        "seeds": 1,
        **WORKLOAD,
        "base": {"optimizer": {"name": "adam"}},
    }
    block["data"] = {"name": "debug", "label_noise": 0.3}
    budget = {"techniques": [technique], "trials": 3, "stack": 3, "sampler": "random", "sampler_seed": 1}
    params = parse_params({"studies": {"s": block}, "tuning": {"s": budget}})
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    summary = tune_study(params, "s", tracker=tracker, storage=storage, root=tmp_path)[technique]
    runs = [tracker.read(r.info.run_id) for r in tracker.search("s", {"kind": "trial"})]
    assert len(runs) == 3 and {r.tags["trials_stacked"] for r in runs} == {"3"}
    assert len({r.config[family][hp] for r in runs}) == 3
    study = optuna.load_study(study_name=summary["optuna_study"], storage=storage)
    trial = study.trials[0]
    cfg = params.study("s").run(technique).with_technique_params(trial.params, variant="t0")
    alone = train_single(cfg, runs[0].seed)
    record = next(r for r in runs if r.tags["optuna_trial"] == "0")
    assert record.metrics["test/loss"] == pytest.approx(alone.metrics["test/loss"], rel=1e-4)


def test_batch_size_trials_with_their_own_learning_rates_stack_and_equal_each_alone():
    """The batch study tunes each regime's lr: trials of mb_8 differ only in the optimizer lr once resolved, so
    they share one stack, and each ends as mb_8 at its lr alone; regimes of different batch sizes do not stack."""
    from techbench.training.effective import build_run_model, resolve
    from techbench.training.single import train_single
    from techbench.training.stacked import members_unstackable, train_members
    from techbench.workloads import load_dataset

    block = {
        "family": "batching",
        "techniques": ["mb_8", "mb_32"],
        "seeds": 1,
        "base": {"optimizer": {"name": "momentum"}},
        **WORKLOAD,
    }
    spec = parse_params({"studies": {"b": block}}).study("b")
    cfgs = [spec.run("mb_8").with_technique_params({"lr": lr}, variant=f"trial{i}") for i, lr in enumerate((0.3, 0.01))]
    data = load_dataset(cfgs[0].data, 0)
    runs = [resolve(c, data) for c in cfgs]
    assert members_unstackable(runs, [build_run_model(r, data) for r in runs]) is None
    other = resolve(spec.run("mb_32"), data)
    assert "differ" in members_unstackable([runs[0], other], [build_run_model(r, data) for r in (runs[0], other)])
    stacked = train_members([(c, 0) for c in cfgs])
    for cfg, got in zip(cfgs, stacked, strict=True):
        assert got.run["optimizer"]["lr"] == cfg.components["batching"]["lr"]
        _same_run(got, train_single(cfg, 0))
