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
    "family": "optimizers",
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
