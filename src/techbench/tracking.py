"""The only owner of MLflow: where runs go, what identifies them, and how they are read back.

One experiment per study. A run is identified by tags (study, technique, variant, config_hash, seed);
``config_hash`` covers the whole run config and the code version, so finished runs are found and skipped
after an interruption, and reports read only the runs of the current configuration.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

DEFAULT_URI = "sqlite:///mlflow.db"
CURVE_KEYS = ["train/loss", "train/acc", "val/loss", "val/acc", "lr", "time/epoch_s"]


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else mlflow.db in the working directory, as an absolute sqlite URI
    (relative sqlite paths break as soon as a process changes directory)."""
    return absolute_sqlite(os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI)


def absolute_sqlite(url: str) -> str:
    """sqlite:///relative.db -> sqlite:////abs/relative.db; any other URL unchanged."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        url = prefix + str(Path(url[len(prefix) :]).resolve())
    return url


def _artifact_location(uri: str) -> str | None:
    # Without a server, new experiments would put artifacts in ./mlruns of whatever the cwd is.
    if uri.startswith("sqlite:"):
        return Path(uri.removeprefix("sqlite:///")).resolve().parent.joinpath("mlartifacts").as_uri()
    return None


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


class Tracker:
    def __init__(self, uri: str | None = None):
        from mlflow.tracking import MlflowClient

        self.uri = uri or tracking_uri()
        self.client = MlflowClient(tracking_uri=self.uri)
        self._experiments: dict[str, str] = {}

    def experiment_id(self, study: str) -> str:
        if study not in self._experiments:
            exp = self.client.get_experiment_by_name(study)
            if exp is None:
                exp_id = self.client.create_experiment(study, artifact_location=_artifact_location(self.uri))
            else:
                exp_id = exp.experiment_id
            self._experiments[study] = exp_id
        return self._experiments[study]

    def search(self, study: str, filters: dict[str, str], finished_only: bool = True) -> Iterator[Any]:
        """Runs of a study whose tags equal ``filters`` (all pages)."""
        exp = self.client.get_experiment_by_name(study)
        if exp is None:
            return
        clauses = [f"tags.`{k}` = '{v}'" for k, v in filters.items()]
        if finished_only:
            clauses.append("attributes.status = 'FINISHED'")
        token = None
        while True:
            page = self.client.search_runs(
                [exp.experiment_id], " AND ".join(clauses), max_results=1000, page_token=token
            )
            yield from page
            token = page.token
            if not token:
                break

    def finished_run(self, study: str, config_hash: str, seed: int) -> Any | None:
        filters = {"config_hash": config_hash, "seed": str(seed), "complete": "1"}
        return next(iter(self.search(study, filters)), None)

    def logger(self, study: str, run_name: str, tags: dict[str, str], parent_run_id: str | None = None):
        from lightning.pytorch.loggers import MLFlowLogger

        tags = {**tags, "git_commit": git_commit()}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        self.experiment_id(study)  # created here once, never raced by the logger
        return MLFlowLogger(
            experiment_name=study,
            run_name=run_name,
            tracking_uri=self.uri,
            tags=tags,
            artifact_location=_artifact_location(self.uri),
        )

    def start_parent(self, study: str, run_name: str, tags: dict[str, str]) -> str:
        """A parent run (e.g. one per tuning study) that child runs point to; reused when it exists."""
        existing = next(iter(self.search(study, tags, finished_only=False)), None)
        if existing is not None:
            return existing.info.run_id
        run = self.client.create_run(
            self.experiment_id(study), run_name=run_name, tags={**tags, "git_commit": git_commit()}
        )
        return run.info.run_id

    def history(self, run_id: str, key: str) -> list[float]:
        """Per-epoch values of a metric (logged with step = epoch), NaN where an epoch is missing."""
        points = self.client.get_metric_history(run_id, key)
        by_step = {int(p.step): p.value for p in points}
        return [by_step.get(i, float("nan")) for i in range(max(by_step) + 1)] if by_step else []
