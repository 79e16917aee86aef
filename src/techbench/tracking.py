"""The only owner of MLflow: where runs go, how a RunRecord is written, and how records are read back.

One experiment per study. A run is identified by tags (study, technique, variant, config_hash, seed);
``config_hash`` covers the whole run config and the code version, so finished runs are found and skipped
after an interruption, and results read only the runs of the current configuration. A run is written in one
call once it has ended (``write``): params (the flattened effective configuration), final metrics and per-step
histories, artifacts, the record itself as ``record.json`` and, last, the ``complete`` tag: a run without it
did not finish and is trained again on resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from techbench.errors import ConfigError
from techbench.liveness import git_commit, is_dead, primary_only, this_process
from techbench.records import RunRecord, flatten

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Set after MLflow configured its own loggers at import: schema creation and migration say nothing of the runs.
for _name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
    logging.getLogger(_name).setLevel(logging.WARNING)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

log = logging.getLogger("techbench")
DEFAULT_URI = "sqlite:///mlflow.db"
# MLflow 3 opens an experiment without a kind in its GenAI view (traces); these are model-training runs.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
RECORD = "record.json"
BATCH = 1000  # MLflow's limit of entries per log_batch
PARAM_CHARS = 6000  # MLflow's limit of a param value


# What MLflow can track to: a database (SQLAlchemy URL), a tracking server, a local folder (a path, file:).
TRACKING_SCHEMES = ["sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks"]


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else mlflow.db in the project root, as an absolute sqlite URI (relative
    sqlite paths break as soon as a process changes directory). A scheme MLflow has no store for is a
    ConfigError before anything is written."""
    uri = absolute_sqlite(os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI)
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else ""
    if scheme and scheme not in TRACKING_SCHEMES:
        raise ConfigError(
            "MLFLOW_TRACKING_URI", f"{uri!r}: MLflow has no store for {scheme!r}", TRACKING_SCHEMES, "the environment"
        )
    return uri


def project_root(cwd: Path | None = None) -> Path:
    """The directory relative store paths are read from: the working directory, except inside the throwaway
    copy `dvc exp run --temp` / `--queue` makes (<root>/.dvc/tmp/exps/...), where it is <root>, so that an
    experiment's runs and trials land in the project's stores instead of being deleted with the copy."""
    cwd = (cwd or Path.cwd()).resolve()
    parts = cwd.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return cwd


def absolute_sqlite(url: str, cwd: Path | None = None) -> str:
    """sqlite:///relative.db -> sqlite:////<project root>/relative.db; any other URL unchanged."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        url = prefix + str((project_root(cwd) / url[len(prefix) :]).resolve())
    return url


def store_lock(url: str) -> contextlib.AbstractContextManager:
    """A file lock next to a sqlite database (``<db>.lock``), else nothing: processes that open one fresh sqlite
    file at once would each create its schema (MLflow's migrations fail with "table already exists") and each
    create the same experiment. A database server serializes this itself."""
    if url.startswith("sqlite:///") and ":memory:" not in url:
        return FileLock(url.removeprefix("sqlite:///") + ".lock", timeout=600)
    return contextlib.nullcontext()


def _artifact_location(uri: str) -> str | None:
    # Without a server, new experiments would put artifacts in ./mlruns of whatever the cwd is.
    if uri.startswith("sqlite:"):
        return Path(uri.removeprefix("sqlite:///")).resolve().parent.joinpath("mlartifacts").as_uri()
    return None


def _dataset_input(data: dict[str, Any], n_train: Any) -> DatasetInput:
    """The run's training data as an MLflow input: its name, a digest of its generator parameters (the data is
    generated from them, so equal digests mean equal data), the parameters themselves as the source."""
    spec = json.dumps(data, sort_keys=True, default=str)
    local = data.get("path")
    dataset = Dataset(
        name=str(data["name"]),
        digest=hashlib.sha256(spec.encode()).hexdigest()[:12],
        source_type="local" if local else "generator",
        source=str(local) if local else spec,
        profile=json.dumps({"n_train": n_train}),
    )
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])


class Tracker:
    def __init__(self, uri: str | None = None):
        self.uri = uri or tracking_uri()
        with store_lock(self.uri):  # the client creates (or migrates) the schema as it opens the store
            self.client = MlflowClient(tracking_uri=self.uri)
        self._experiments: dict[str, str] = {}

    def experiment_id(self, study: str) -> str:
        if study not in self._experiments:
            with store_lock(self.uri):  # get-or-create: two processes must not both create it
                self._experiments[study] = self._get_or_create(study)
        return self._experiments[study]

    def _get_or_create(self, study: str) -> str:
        exp = self.client.get_experiment_by_name(study)
        if exp is None:
            try:
                return self.client.create_experiment(
                    study, artifact_location=_artifact_location(self.uri), tags=EXPERIMENT_TAGS
                )
            except MlflowException as e:  # a server's other client created it first
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                exp = self.client.get_experiment_by_name(study)
        for key, value in EXPERIMENT_TAGS.items():
            if exp.tags.get(key) != value:
                self.client.set_experiment_tag(exp.experiment_id, key, value)
        return exp.experiment_id

    # --- writing ----------------------------------------------------------------------------------------------

    @primary_only("")
    def write(self, record: RunRecord) -> str:
        """Write a finished run in one call; returns its run id (also set on the record)."""
        tags = {**record.tags, "kind": record.kind, "owner": this_process(), "git_commit": git_commit()}
        if record.parent_run_id:
            tags["mlflow.parentRunId"] = record.parent_run_id
        run = self.client.create_run(self.experiment_id(record.study), run_name=record.name, tags=tags)
        run_id = record.run_id = run.info.run_id
        params = [Param(k, str(v)[:PARAM_CHARS]) for k, v in flatten(record.config).items()]
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, 0) for k, v in record.metrics.items() if v is not None]
        for key, values in record.histories.items():
            metrics += [Metric(key, float(v), now, i) for i, v in enumerate(values) if v is not None]
        try:
            for i in range(0, len(params), 100):  # params go in smaller batches (their own, lower limit)
                self.client.log_batch(run_id, params=params[i : i + 100])
            for i in range(0, len(metrics), BATCH):
                self.client.log_batch(run_id, metrics=metrics[i : i + BATCH])
            data = record.config.get("data")
            if isinstance(data, dict) and data.get("name"):
                self.client.log_inputs(run_id, [_dataset_input(data, record.config.get("n_train"))])
            self._artifacts(run_id, {**record.artifacts, RECORD: record.as_json()})
            self.client.set_terminated(run_id, "KILLED" if record.outcome == "pruned" else "FINISHED")
        except Exception:
            # Never left RUNNING: a write that failed half-way is a FAILED run, without the `complete` tag that
            # makes a run count as finished (so the next run of the study trains it again).
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_tag(run_id, "complete", "1")  # last: the run counts as finished only now
        return run_id

    def _artifacts(self, run_id: str, artifacts: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for rel, content in artifacts.items():
                path = Path(tmp) / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, bytes):
                    path.write_bytes(content)
                elif isinstance(content, str):
                    path.write_text(content)
                else:
                    path.write_text(json.dumps(content, default=str))
                folder = str(Path(rel).parent) if Path(rel).parent != Path(".") else None
                self.client.log_artifact(run_id, str(path), folder)

    @primary_only("")
    def start_parent(self, study: str, run_name: str, tags: dict[str, str]) -> str:
        """A parent run (e.g. one per tuning study) that child runs point to; reused when it exists."""
        existing = self._parents(study, tags)
        if existing:
            return existing[0]
        mine = self.client.create_run(
            self.experiment_id(study),
            run_name=run_name,
            tags={**tags, "owner": this_process(), "git_commit": git_commit()},
        ).info.run_id
        # Processes that started at once (tuning workers) may each have created one: all keep the oldest.
        winner = self._parents(study, tags)[0]
        if winner != mine:
            self.client.delete_run(mine)
        return winner

    def _parents(self, study: str, tags: dict[str, str]) -> list[str]:
        runs = sorted(self.search(study, tags, finished_only=False), key=lambda r: (r.info.start_time, r.info.run_id))
        return [r.info.run_id for r in runs]

    @primary_only([])
    def close_abandoned(self, study: str) -> list[str]:
        """Close the runs of ``study`` left RUNNING by a process that died on this machine (killed while a run
        was written, a tuning worker killed before its parent was finished) as KILLED, with an ``abandoned``
        tag, so that the UI tells the truth; returns their ids. A run whose owner is alive, or on another
        machine, is left as it is."""
        exp = self.client.get_experiment_by_name(study)
        if exp is None:
            return []
        closed = []
        for run in self.client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
            owner = run.data.tags.get("owner")
            if is_dead(owner):
                self.client.set_tag(run.info.run_id, "abandoned", f"its process {owner} ended before closing it")
                self.client.set_terminated(run.info.run_id, "KILLED")
                closed.append(run.info.run_id)
        if closed:
            log.info("%s: %d run(s) left RUNNING by a dead process closed as KILLED", study, len(closed))
        return closed

    @primary_only()
    def adopt(self, run_id: str, parent_run_id: str) -> None:
        """Make a finished run a child of ``parent_run_id`` (runs written before their parent existed)."""
        self.client.set_tag(run_id, "mlflow.parentRunId", parent_run_id)

    @primary_only()
    def finish_parent(self, run_id: str, metrics: dict[str, float], tags: dict[str, str]) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            tags=[RunTag(k, str(v)) for k, v in tags.items()],
        )
        self.client.set_terminated(run_id, "FINISHED")

    # --- reading ----------------------------------------------------------------------------------------------

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

    def read(self, run_id: str) -> RunRecord:
        """The record a run was written from."""
        return RunRecord.from_json(json.loads(self.artifact(run_id, RECORD)), run_id)

    def records(
        self, study: str, kind: str = "run", wanted: set[tuple[str, int]] | None = None
    ) -> dict[tuple[str, int], RunRecord]:
        """The finished records of a study of ``kind`` (only the (config_hash, seed) pairs ``wanted``, if given),
        by (config_hash, seed); the newest wins."""
        newest: dict[tuple[str, int], Any] = {}
        for run in sorted(self.search(study, {"complete": "1", "kind": kind}), key=lambda r: r.info.start_time):
            key = (run.data.tags["config_hash"], int(run.data.tags["seed"]))
            if wanted is None or key in wanted:
                newest[key] = run
        return {key: self.read(run.info.run_id) for key, run in newest.items()}

    def artifact(self, run_id: str, path: str) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            return Path(self.client.download_artifacts(run_id, path, tmp)).read_bytes()

    def history(self, run_id: str, key: str) -> list[float]:
        """Per-step values of a metric, NaN where a step is missing."""
        points = self.client.get_metric_history(run_id, key)
        by_step = {int(p.step): p.value for p in points}
        return [by_step.get(i, float("nan")) for i in range(max(by_step) + 1)] if by_step else []
