"""Scale-out on the real engines: several processes sharing one MLflow store and one Optuna study (sqlite on
one machine, a real PostgreSQL for workers on several), a worker killed with SIGKILL in the middle of a trial,
and the numbers that must hold afterwards: exactly the requested trials finished, one complete MLflow run per
finished trial, the killed trial failed and retried, no run left RUNNING, the tuned configuration evaluated once."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import DEBUG_STUDY, write_params

from techbench.tracking import Tracker
from techbench.trial_store import FINISHED, WORKER, storage_url
from techbench.workers import worker_env

TRIALS = 4
SLOW = {**DEBUG_STUDY, "train": {"epochs": 60, "batch_size": 16}}  # ~2 s a trial: long enough to be killed in


def _params(workdir: Path, trials: int = TRIALS, **study) -> None:
    raw = {
        "studies": {"optimizers": {**copy.deepcopy(SLOW), **study}},
        "tuning": {"optimizers": {"techniques": ["adam"], "trials": trials, "heartbeat": 1, "sampler": "random"}},
    }
    write_params(workdir / "params.yaml", raw)


def _start(workdir: Path, *argv: str, host: str | None = None) -> subprocess.Popen:
    env = {**os.environ, **({"TECHBENCH_HOST": host} if host else {})}
    cmd = [sys.executable, "-m", "techbench.cli", "-q", *argv]
    return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> None:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]


def _study(url: str) -> optuna.Study:
    (summary,) = optuna.get_all_study_summaries(url)
    return optuna.load_study(study_name=summary.study_name, storage=url)


def _kill_in_a_trial(proc: subprocess.Popen, url: str, owner: str, after: int = 0) -> int:
    """SIGKILL ``proc`` while it trains a trial (once ``after`` trials have finished); that trial's number."""
    deadline = time.time() + 240
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        try:
            trials = _study(url).get_trials(deepcopy=False)
        except (ValueError, KeyError):  # the study is not created yet
            trials = []
        finished = sum(t.state in FINISHED for t in trials)
        mine = [t for t in trials if t.state.name == "RUNNING" and t.user_attrs.get(WORKER, "").startswith(owner)]
        if mine and finished >= after:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return mine[0].number
        time.sleep(0.1)
    raise AssertionError("the worker never ran a trial")


def _check_the_study_and_its_runs(url: str, killed: int, trials: int = TRIALS) -> optuna.Study:
    study = _study(url)
    finished = [t for t in study.trials if t.state in FINISHED]
    assert len(finished) == trials, [(t.number, t.state.name) for t in study.trials]
    assert study.trials[killed].state.name == "FAIL"
    assert any(t.system_attrs.get("failed_trial") == killed for t in finished), "the killed trial was not retried"
    assert len({t.params["lr"] for t in finished}) == trials  # new points, not the first ones again

    tracker = Tracker()
    runs = list(tracker.search("optimizers", {}, finished_only=False))
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    trial_runs = [r for r in runs if r.data.tags.get("kind") == "trial" and r.data.tags.get("complete") == "1"]
    per_trial = {t.number: [r for r in trial_runs if r.data.tags["optuna_trial"] == str(t.number)] for t in finished}
    for t in finished:
        status = "KILLED" if t.state.name == "PRUNED" else "FINISHED"  # a pruned trial's run ends as KILLED
        assert [r.info.status for r in per_trial[t.number]] == [status], (t.number, per_trial[t.number])
    assert len(trial_runs) == trials
    tuned = [r for r in runs if r.data.tags.get("variant") == "tuned"]
    assert len(tuned) == DEBUG_STUDY["seeds"] and {r.info.status for r in tuned} == {"FINISHED"}
    parents = [r for r in runs if r.data.tags.get("kind") == "tuning"]
    assert [p.info.status for p in parents] == ["FINISHED"]
    summary = json.loads(Path("results/optimizers/tuning.json").read_text())["adam"]
    assert summary["trials"] == trials and summary["failed"] >= 1
    return study


def test_two_run_processes_create_one_fresh_sqlite_store_together(workdir, raw_params):
    """Both create the MLflow schema and their experiments at once: every run is there, no process fails."""
    one = copy.deepcopy(DEBUG_STUDY) | {"seeds": 1, "train": {"epochs": 1, "batch_size": 32}}
    write_params(workdir / "params.yaml", {"studies": {"one": one, "two": copy.deepcopy(one)}})
    procs = [_start(workdir, "run", study) for study in ("one", "two")]
    for proc in procs:
        _finish(proc)
    tracker = Tracker()
    for study in ("one", "two"):
        runs = list(tracker.search(study, {"kind": "run", "complete": "1"}))
        assert len(runs) == 2


def test_a_killed_tuning_resumes_with_new_points_and_closes_what_it_left(workdir):
    """The finding on main: a resumed study proposed its first points again and left the killed trial RUNNING."""
    _params(workdir)
    url = storage_url()
    proc = _start(workdir, "tune", "optimizers")
    killed = _kill_in_a_trial(proc, url, owner="", after=1)
    _finish(_start(workdir, "tune", "optimizers"))
    _check_the_study_and_its_runs(url, killed)


def test_local_workers_share_the_budget_and_evaluate_once(workdir):
    _params(workdir)
    _finish(_start(workdir, "tune", "optimizers", "--workers", "2"))
    study = _study(storage_url())
    finished = [t for t in study.trials if t.state in FINISHED]
    assert len(finished) == TRIALS and len({t.user_attrs[WORKER] for t in finished}) == 2
    tracker = Tracker()
    runs = list(tracker.search("optimizers", {}, finished_only=False))
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert len([r for r in runs if r.data.tags.get("variant") == "tuned"]) == DEBUG_STUDY["seeds"]
    assert len([r for r in runs if r.data.tags.get("kind") == "tuning"]) == 1


def test_workers_on_postgresql_survive_a_worker_killed_mid_trial(workdir, postgres_url):
    """Two workers on two "machines" (TECHBENCH_HOST) share one study in PostgreSQL; one is killed with SIGKILL
    while it trains a trial: the other finds the trial's heartbeat stale, fails it, and trains its retry."""
    _params(workdir)
    a = _start(workdir, "tune", "optimizers", "--storage", postgres_url, "--trials-only", host="machine-a")
    b = _start(workdir, "tune", "optimizers", "--storage", postgres_url, "--trials-only", host="machine-b")
    killed = _kill_in_a_trial(a, postgres_url, owner="machine-a")
    _finish(b)
    _finish(_start(workdir, "tune", "optimizers", "--storage", postgres_url))  # the evaluation, once
    study = _check_the_study_and_its_runs(postgres_url, killed)
    workers = {t.user_attrs[WORKER].split(":")[0] for t in study.trials if t.state in FINISHED}
    assert "machine-b" in workers


@pytest.mark.parametrize(
    ("accelerator", "visible", "expected"),
    [("gpu", "3,5", ["3", "5", "3"]), ("cpu", "3,5", ["", "", ""]), ("cpu", None, ["", "", ""])],
)
def test_each_worker_gets_one_visible_gpu_or_none(monkeypatch, accelerator, visible, expected):
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    hardware = {"accelerator": accelerator, "devices": 1}
    assert [worker_env(i, 3, hardware)["CUDA_VISIBLE_DEVICES"] for i in range(3)] == expected
