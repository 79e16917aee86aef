"""Run a study (every technique x seed of one params.yaml block, skipping runs already finished) and export its
results: MLflow records -> rows -> results/<study>/ (through results.py, the only writer of that folder)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from techbench import code_version
from techbench.analysis.bias_variance import decompose_probs
from techbench.analysis.rows import row_from_record
from techbench.analysis.summary import aggregate, mean_curves, probe_means
from techbench.errors import ConfigError
from techbench.groups import group_parent, summarize_groups
from techbench.probe_runs import probe_results, run_probes
from techbench.progress import Progress
from techbench.records import RunRecord
from techbench.results import CURVE_COLUMNS, StudyResults, write_study
from techbench.specs import Params, RunConfig, StudySpec
from techbench.techniques import FAMILIES
from techbench.tracking import Tracker
from techbench.training.effective import build_run_model, resolve
from techbench.training.executors import execute
from techbench.training.single import train_single
from techbench.training.trainer import check_hardware, make_trainer
from techbench.workloads import load_dataset
from techbench.workloads.pretrained import check_weights

log = logging.getLogger("techbench")


def pending_runs(tracker: Tracker, runs: list[tuple[RunConfig, int]], force: bool) -> Iterator[tuple[RunConfig, int]]:
    """(config, seed) pairs without a finished MLflow run of the same config hash and seed."""
    for cfg, seed in runs:
        done = None if force else tracker.finished_run(cfg.study, cfg.config_hash(), seed)
        if done is None:
            yield cfg, seed
        else:
            log.debug("skip %s/%s/seed%d: finished as run %s", cfg.label, cfg.workload, seed, done.info.run_id)


def preflight(spec: StudySpec) -> None:
    """Build every (data, model, technique components) combination once before training anything, so an
    impossible one (exact Newton on a model too large for its Hessian, spatial dropout on an MLP, a training
    subset larger than the data) is a config error, not a half-finished study."""
    if spec.source is not None:
        try:
            check_weights(spec.source_weights)
        except ValueError as e:
            raise ConfigError(f"{spec.key}.source", f"{e} (train it: dvc repro pretrain@{spec.source})") from None
    seen = set()
    for cfg in spec.runs:
        key = (cfg.workload, repr(cfg.data), repr(cfg.model), repr(sorted(cfg.components.items())))
        if key in seen:
            continue
        seen.add(key)
        try:
            data = load_dataset(cfg.data)
            run = resolve(cfg, data)
            model = build_run_model(run, data)
            FAMILIES["optimizer"].build(run["optimizer"], model)
            for family in FAMILIES:
                family.objective(run[family.name], model, run.n_train)
                family.callbacks(run[family.name], run.as_dict())
        except (ValueError, RuntimeError, TypeError) as e:
            message = str(e) if str(e).startswith(cfg.technique) else f"{cfg.technique}: {e}"
            raise ConfigError(f"{spec.key}.workloads.{cfg.workload}", message) from None
    if spec.runs:
        check_hardware(spec.runs[0].hardware)
        try:  # whatever else Lightning refuses (a strategy this machine cannot run)
            make_trainer(spec.runs[0].hardware, spec.runs[0].train)
        except Exception as e:  # Lightning raises its own MisconfigurationException types
            raise ConfigError("hardware", str(e).splitlines()[0]) from None


def run_study(params: Params, study: str, force: bool = False, tracker: Tracker | None = None) -> int:
    """Train every missing run of ``study``; returns how many were trained."""
    spec = params.study(study)
    preflight(spec)  # before the first MLflow write
    tracker = tracker or Tracker()
    tracker.close_abandoned(study)
    if spec.probes:  # cheap, and a probe's impossible setting should stop the study before training
        run_probes(spec, params.hardware, tracker, force)
    _warm_up(spec)
    pending: dict[str, tuple[RunConfig, list[int]]] = {}  # config hash -> (config, its unfinished seeds)
    wanted = [(c, s) for c in spec.runs for s in range(spec.seeds)]
    for cfg, seed in pending_runs(tracker, wanted, force):
        pending.setdefault(cfg.config_hash(), (cfg, []))[1].append(seed)
    progress = Progress(study, sum(len(seeds) for _, seeds in pending.values()), len(wanted))
    for cfg, seeds in pending.values():
        parent = group_parent(tracker, cfg)  # the seeds are child runs of their configuration's group
        for result in execute(cfg, seeds, spec.execution):
            run_id = tracker.write(result.record("run", parent))
            progress.done(f"{result.name}: {result.outcome} test/acc={result.metrics['test/acc']:.4f} ({run_id})")
    progress.close()
    return progress.k


def _warm_up(spec: StudySpec) -> None:
    """One untimed epoch of the study's first run, unrecorded: the first fit of a process pays one-time costs
    (library initialization, kernel selection) that would otherwise inflate one run's wall time."""
    if spec.runs:
        cfg = spec.runs[0]
        train_single(replace(cfg, train={**cfg.train, "epochs": 1}), seed=0)


def export_study(params: Params, study: str, tracker: Tracker | None = None, root: Path | None = None) -> Path:
    """Write results/<study>/ from the finished records of the current configuration (probes included:
    they were run by run_study and are read back, not run again)."""
    spec = params.study(study)
    tracker = tracker or Tracker()
    wanted = {(c.config_hash(), s) for c in spec.runs for s in range(spec.seeds)}
    records = tracker.records(study, "run", wanted)
    rows = []
    for cfg in spec.runs:
        target = spec.workloads[cfg.workload].target_value  # the workload's target (time to target)
        rows += [row_from_record(records[key], target) for key in _keys(cfg, spec, records)]
    family = FAMILIES[spec.family] if spec.family else None
    results = StudyResults(
        study=study,
        family=_family(family),
        techniques={t: family.describe(t) for t in spec.techniques} if family else {},
        configs={f"{c.workload}/{c.label}": _config(c, spec, records) for c in spec.runs},
        runs=rows,
        probes=probe_results(spec, params.hardware, tracker),
        baselines=spec.baselines,
    )
    summarize_groups(tracker, spec, records)
    metrics = aggregate(rows, family.summary if family else ())
    decomposition = bias_variance(tracker, spec, records)
    if decomposition:  # joins the DVC metrics, so `dvc metrics diff` shows bias² and variance too
        metrics["bias_variance"] = decomposition
    if results.probes:
        metrics["probes"] = probe_means(results.probes)
    return write_study(root or Path(params.paths["results"]), results, metrics, mean_curves(rows, CURVE_COLUMNS))


def _keys(cfg: RunConfig, spec: StudySpec, records: dict) -> list[tuple[str, int]]:
    return [(cfg.config_hash(), s) for s in range(spec.seeds) if (cfg.config_hash(), s) in records]


def _family(family) -> dict | None:
    if family is None:
        return None
    columns = [{"metric": c.metric, "header": c.header, "scale": c.scale, "digits": c.digits} for c in family.columns]
    return {
        "name": family.name,
        "description": family.description,
        "default": family.default["name"],  # the baseline the family's findings compare with
        "columns": columns,
        "summary": list(family.summary),
        "findings": family.findings,
        "across": family.across,
    }


def _config(cfg: RunConfig, spec: StudySpec, records: dict[tuple[str, int], RunRecord]) -> dict:
    """The configuration as it trained (from a finished record), else as requested; every slot's flags."""
    trained = next((records[k].config for k in _keys(cfg, spec, records)), None)
    config = dict(trained) if trained is not None else cfg.as_dict()
    info = {f.name: f.describe(config[f.name]["name"]) for f in FAMILIES if f.name in config}
    return {
        **config,
        "config_hash": cfg.config_hash(),
        "seeds": spec.seeds,
        "code_version": code_version(),
        "trained": trained is not None,
        "info": info,
    }


def bias_variance(tracker: Tracker, spec: StudySpec, records: dict) -> dict:
    """Per workload and variant: the decomposition of the test error over seeds (runs that saved their test
    probabilities, ``train.save_predictions``); {} when no run did."""
    out: dict = {}
    for cfg in spec.runs:
        if not cfg.train.get("save_predictions"):
            continue
        saved = [records[k] for k in _keys(cfg, spec, records) if "predictions/test.npz" in records[k].artifacts]
        arrays = [np.load(io.BytesIO(tracker.artifact(r.run_id, "predictions/test.npz"))) for r in saved]
        if len(arrays) >= 2:
            parts = decompose_probs(np.stack([a["probs"].astype(np.float64) for a in arrays]), arrays[0]["labels"])
            # "error" is DVC's marker of a metrics file it failed to read: the Brier error is "brier".
            named = {("brier" if k == "error" else k): round(float(v), 6) for k, v in parts.items()}
            out.setdefault(cfg.workload, {})[cfg.label] = named
    return out
