"""Run a study's probes: each (probe, seed) is one MLflow run (tag kind=probe), skipped when a FINISHED run
of the same probe configuration and seed exists; its full result is kept as the run's `probe.json` artifact
so results/<study>/probes.json can be rebuilt from MLflow alone."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

from techbench.config import StudySpec
from techbench.probes import PROBES, ProbeContext, run_probe
from techbench.tracking import Tracker, git_commit

log = logging.getLogger("techbench")
ARTIFACT = "probe.json"


def probe_context(spec: StudySpec, seed: int) -> ProbeContext:
    """Probes measure on the study's first workload with its fixed components."""
    w = next(iter(spec.workloads.values()))
    hardware = spec.runs[0].hardware if spec.runs else {}
    return ProbeContext(w.data, w.model, w.train, hardware, dict(spec.fixed), seed)


def probe_hash(spec: StudySpec, name: str, hardware: dict[str, Any]) -> str:
    from techbench import code_version

    ctx = probe_context(spec, 0)
    blob = {
        "probe": spec.probes[name],
        "data": ctx.data,
        "model": ctx.model,
        "train": ctx.train,
        "components": ctx.components,
        "hardware": hardware,
        "code": code_version(),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]


def metric_name(*parts: str) -> str:
    # MLflow metric names allow letters, digits, _ - . / and spaces.
    return "/".join(re.sub(r"[^A-Za-z0-9_\-. ]", "_", p) for p in parts)


def _log_result(tracker: Tracker, run_id: str, result: dict[str, Any]) -> None:
    from mlflow.entities import Metric

    metrics = []
    for row in result["rows"]:
        for k, v in row.items():
            if k != "row" and isinstance(v, (int, float)) and not isinstance(v, bool):
                metrics.append(Metric(metric_name(str(row["row"]), k), float(v), 0, 0))
    for label, series in result["curves"].items():
        for k, values in series.items():
            if k == "x":
                continue
            metrics += [Metric(metric_name("curve", label, k), float(v), 0, i) for i, v in enumerate(values)]
    for i in range(0, len(metrics), 1000):  # MLflow's batch limit
        tracker.client.log_batch(run_id, metrics=metrics[i : i + 1000])
    tracker.client.log_text(run_id, json.dumps(result, default=_json), ARTIFACT)


def _json(o: Any) -> Any:
    return None if isinstance(o, float) else str(o)


def _read_result(tracker: Tracker, run_id: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = tracker.client.download_artifacts(run_id, ARTIFACT, tmp)
        return json.loads(Path(path).read_text())


def run_probes(spec: StudySpec, hardware: dict[str, Any], tracker: Tracker, force: bool = False) -> dict[str, Any]:
    """Run every missing (probe, seed); return {probe: {description, hp, runs: [result + seed, run_id]}}."""
    from techbench import code_version

    out: dict[str, Any] = {}
    for name, hp_spec in spec.probes.items():
        hp = {k: v for k, v in hp_spec.items() if k != "name"}
        chash = probe_hash(spec, name, hardware)
        runs = []
        for seed in range(spec.seeds):
            done = None if force else tracker.finished_run(spec.name, chash, seed)
            if done is not None:
                log.info("skip probe %s/seed%d: finished as run %s", name, seed, done.info.run_id)
                result, run_id = _read_result(tracker, done.info.run_id), done.info.run_id
            else:
                tags = {
                    "study": spec.name,
                    "kind": "probe",
                    "probe": name,
                    "technique": name,
                    "seed": str(seed),
                    "config_hash": chash,
                    "code_version": code_version(),
                    "git_commit": git_commit(),
                }
                try:
                    result = run_probe(name, probe_context(spec, seed), hp).as_dict()
                except ValueError as e:  # an impossible setting the registry's types could not catch
                    from techbench.errors import ConfigError

                    raise ConfigError(f"studies.{spec.name}.probes.{name}", str(e)) from None
                run = tracker.client.create_run(
                    tracker.experiment_id(spec.name), run_name=f"probe/{name}/seed{seed}", tags=tags
                )
                run_id = run.info.run_id
                for k, v in {**hp, "seed": seed}.items():
                    tracker.client.log_param(run_id, k, str(v)[:6000])
                _log_result(tracker, run_id, result)
                tracker.client.set_tag(run_id, "complete", "1")
                tracker.client.set_terminated(run_id, "FINISHED")
                log.info("probe %s/seed%d: %d rows (%s)", name, seed, len(result["rows"]), run_id)
            runs.append({**result, "seed": seed, "run_id": run_id})
        out[name] = {"description": PROBES.get(name).description, "hp": hp, "config_hash": chash, "runs": runs}
    return out
