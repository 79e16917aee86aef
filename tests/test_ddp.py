"""Data parallelism on CPU (gloo, 2 processes), the path multi-GPU runs take: the same numbers as one process,
one writer, and Optuna pruning that reaches the spawned ranks."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import DEBUG_STUDY, write_params

from techbench.config import parse_params
from techbench.tracking import Tracker
from techbench.training.single import train_single
from techbench.trial_store import storage_url
from techbench.trials import Pruning

pytestmark = pytest.mark.slow

# Stated tolerance: DDP averages the two ranks' gradients (one all-reduce per step, summed in another order than
# one process's mean), so the runs agree to float32 rounding accumulated over the steps, not bit for bit.
DDP_RTOL = 1e-6  # measured: 9e-8 (about one float32 ulp) on the debug workload


def _run(raw_params, batch_size, hardware=None):
    block = raw_params["studies"]["optimizers"]
    block["train"].update(batch_size=batch_size)
    if hardware:
        raw_params["hardware"] = hardware
    return parse_params(raw_params).studies["optimizers"].run("adam")


def test_two_ranks_of_batch_b_train_as_one_process_of_batch_2b(raw_params):
    """Rank r takes every other example of each epoch's permutation, so the two ranks' batches of 16 are, together,
    the one process's batch of 32 (144 training examples: 72 per rank, the last batch 8 + 8): the same updates, the
    same curves and the same test score."""
    one = train_single(_run(raw_params, 32), 0)
    two = train_single(_run(raw_params, 16, {"devices": 2, "strategy": "ddp_spawn"}), 0)
    assert two.metrics["effective_batch"] == one.metrics["effective_batch"] == 32
    assert two.metrics["updates"] == one.metrics["updates"] == 3 * 5
    for key in ("train/loss", "val/loss", "val/acc"):
        assert two.histories[key] == pytest.approx(one.histories[key], rel=DDP_RTOL), key
    assert two.metrics["test/loss"] == pytest.approx(one.metrics["test/loss"], rel=DDP_RTOL)
    assert two.metrics["test/acc"] == pytest.approx(one.metrics["test/acc"], abs=1e-9)


def _cli(workdir: Path, *argv: str) -> str:
    cmd = [sys.executable, "-m", "techbench.cli", *argv]
    done = subprocess.run(cmd, cwd=workdir, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def test_run_under_ddp_writes_each_run_once_and_resumes(workdir, raw_params):
    """`strategy: ddp` re-executes the command once per rank (Lightning's launcher): every rank runs every
    config in step, rank 0 alone writes MLflow runs and results; a second invocation trains nothing on any rank.
    The numbers are one process's at the effective batch (2 ranks × 16 = 32)."""
    raw_params["hardware"] = {"devices": 2, "strategy": "ddp", "accelerator": "cpu"}
    raw_params["studies"]["optimizers"]["train"]["batch_size"] = 16
    write_params(workdir / "params.yaml", raw_params)
    out = _cli(workdir, "run", "optimizers")
    assert out.count("results: results/optimizers") == 1  # rank 0 exported; rank 1 only trained
    runs = list(Tracker().search("optimizers", {"kind": "run"}, finished_only=False))
    keys = sorted((r.data.tags["technique"], r.data.tags["seed"]) for r in runs)
    assert keys == [(t, str(s)) for t in ("adam", "sgd") for s in range(DEBUG_STUDY["seeds"])]
    assert {(r.info.status, r.data.tags.get("complete"), r.data.params["hardware.strategy"]) for r in runs} == {
        ("FINISHED", "1", "ddp")
    }
    table = json.loads(Path("results/optimizers/runs.json").read_text())["runs"]
    assert len(table) == len(runs) and {row["effective_batch"] for row in table} == {32.0}

    again = _cli(workdir, "run", "optimizers")
    assert again.count("0 to train") == 2  # both ranks found every run finished
    assert len(list(Tracker().search("optimizers", {"kind": "run"}, finished_only=False))) == len(runs)

    one = train_single(_run(copy.deepcopy({"studies": {"optimizers": DEBUG_STUDY}}), 32), 0)
    (adam0,) = (row for row in table if row["technique"] == "adam" and row["seed"] == 0)
    assert adam0["test_loss"] == pytest.approx(one.metrics["test/loss"], rel=DDP_RTOL)


def test_optuna_pruning_reaches_the_spawned_ranks(tmp_path, raw_params):
    """Under ddp_spawn the trial trains in other processes: Optuna's callback keeps the pruning decision in the
    RDB storage, and `Pruning.pruned` (check_pruned) brings it and the intermediate values back to this process's
    trial. A pruner that prunes every trial after two warm-up epochs stops the fit at the third."""
    raw_params["studies"]["optimizers"]["train"]["epochs"] = 6
    cfg = _run(raw_params, 16, {"devices": 2, "strategy": "ddp_spawn"})
    pruner = optuna.pruners.ThresholdPruner(lower=1.01, n_warmup_steps=2)  # val/acc < 1.01 always
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", pruner=pruner)  # RDB, cached
    trial = study.ask()
    pruning = Pruning(trial, monitor="val/acc")
    result = train_single(cfg, 0, callbacks=[pruning])
    assert pruning.pruned and result.metrics["epochs_run"] == 3
    reported = study._storage.get_trial(trial._trial_id).intermediate_values
    assert reported == pytest.approx(dict(enumerate(result.histories["val/acc"])))


def test_tuning_under_ddp_spawn_finishes_its_trials_with_one_run_each(workdir, raw_params):
    """Each trial trains on two spawned ranks; the study ends with the requested trials, one MLflow run per
    trial, and the tuned configuration evaluated once per seed."""
    raw_params["hardware"] = {"devices": 2, "strategy": "ddp_spawn", "accelerator": "cpu"}
    raw_params["studies"]["optimizers"].update(seeds=1)
    raw_params["tuning"] = {"optimizers": {"techniques": ["adam"], "trials": 2, "sampler": "random"}}
    write_params(workdir / "params.yaml", raw_params)
    _cli(workdir, "-q", "tune", "optimizers")
    (summary,) = optuna.get_all_study_summaries(storage_url())
    trials = optuna.load_study(study_name=summary.study_name, storage=storage_url()).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    runs = list(Tracker().search("optimizers", {}, finished_only=False))
    per_trial = sorted(r.data.tags["optuna_trial"] for r in runs if r.data.tags.get("kind") == "trial")
    assert per_trial == ["0", "1"] and {r.info.status for r in runs} == {"FINISHED"}
    assert len([r for r in runs if r.data.tags.get("variant") == "tuned"]) == 1
    assert {r.data.params["hardware.strategy"] for r in runs if "hardware.strategy" in r.data.params} == {"ddp_spawn"}
