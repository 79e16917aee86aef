"""Shared fixtures: a real MLflow sqlite store and Optuna sqlite storage in a temporary directory, and the
debug workload (the real code path, seconds per run)."""

from __future__ import annotations

import copy
import os

import pytest
import yaml

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

DEBUG_STUDY = {
    "family": "optimizer",
    "techniques": ["sgd", "adam"],
    "seeds": 2,
    "data": {"name": "debug"},
    "model": {"name": "mlp", "hidden": [16]},
    "train": {"epochs": 3, "batch_size": 32},
}


@pytest.fixture
def raw_params() -> dict:
    return {"studies": {"optimizers": copy.deepcopy(DEBUG_STUDY)}}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh working directory with its own MLflow and Optuna databases."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("OPTUNA_STORAGE", f"sqlite:///{tmp_path / 'optuna.db'}")
    return tmp_path


def write_params(path, raw: dict):
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# Probe hyperparameters small enough for a smoke run of the whole pipeline (seconds per probe).
PROBE_SMOKE_HP = {
    "multi_task": {"tasks": {"a": {}, "b": {"noise": 0.9, "data_seed": 1}}, "epochs": 1},
    "per_example_loop": {"batch_sizes": [8], "threads": [1], "repeats": 1, "warmup": 0, "dtype": "float64"},
    "vectorized": {"batch_sizes": [8], "threads": [1], "repeats": 1, "warmup": 0, "dtype": "float64"},
    "mixed_precision": {"epochs": 1, "batch_size": 32, "timed_steps": 2, "warmup": 1},
    "grad_checkpointing": {"depths": [2, 4], "width": 32, "batch_size": 16, "repeats": 1, "warmup": 0},
    "grad_accumulation": {"effective_batch": 32, "micro_batches": [1, 2], "repeats": 1, "warmup": 0, "train_steps": 2},
    "forward_mode": {"n_inputs": 20, "n_outputs": 20, "hidden": 8, "repeats": 1, "warmup": 0},
    "reverse_mode": {"n_inputs": 20, "n_outputs": 20, "hidden": 8, "repeats": 1, "warmup": 0},
    "gradient_check": {"activations": ["tanh", "relu"], "coords": 20, "h": [1e-5]},
    "backprop_cost": {"widths": [2, 4], "batch_size": 16, "repeats": 1, "warmup": 0, "fd_max_params": 500},
    "quadratic_gd": {"d": 10, "kappa_values": [10, 100], "steps": 300, "max_iters": 2000, "digits": 0},
    "lr_range_test": {"num_training": 20},
    "few_shot_prototypes": {"ways": 2, "shots": [1], "queries": 5, "episodes": 20},
}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """A throw-away PostgreSQL cluster on 127.0.0.1 (Debian's postgresql package: `make postgres`), stopped
    and deleted after the session. initdb refuses root, so as root the cluster is the postgres user's."""
    import glob
    import shutil
    import subprocess
    import tempfile

    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1:]), None)
    if found is None:
        pytest.fail("PostgreSQL is not installed: `make postgres` installs it (Debian's postgresql package)")
    bindir = os.path.dirname(found)
    root = tempfile.mkdtemp(prefix="techbench-pg-")
    as_owner: list[str] = []
    if os.getuid() == 0:
        shutil.chown(root, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, port = os.path.join(root, "data"), free_port()
    run = lambda *cmd: subprocess.run([*as_owner, *cmd], check=True, capture_output=True, timeout=120)  # noqa: E731
    run(f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(root, "log"), "-w", "-o", options, "start")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_owner, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], timeout=120)
        shutil.rmtree(root, ignore_errors=True)
