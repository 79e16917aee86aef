"""Run a study: every technique x seed of one params.yaml block, skipping runs already finished."""

from __future__ import annotations

import logging

from techbench.config import Params, RunConfig
from techbench.tracking import Tracker
from techbench.training.run import run_name, train_one

log = logging.getLogger("techbench")


def pending_runs(tracker: Tracker, runs: list[tuple[RunConfig, int]], force: bool):
    """(config, seed) pairs without a FINISHED MLflow run of the same config hash and seed."""
    for cfg, seed in runs:
        done = None if force else tracker.finished_run(cfg.study, cfg.config_hash(), seed)
        if done is None:
            yield cfg, seed
        else:
            log.info("skip %s: finished as run %s", run_name(cfg, seed), done.info.run_id)


def preflight(spec) -> None:
    """Build every (data, model, technique components) combination once before training anything, so an
    impossible one (exact Newton on a model too large for its Hessian, spatial dropout on an MLP, a training
    subset larger than the data) is a config error, not a half-finished study."""
    from techbench.errors import ConfigError
    from techbench.techniques.batching import apply_batching
    from techbench.techniques.early_stopping import build_stopping
    from techbench.techniques.optimizers import build_optimizer
    from techbench.techniques.regularization import build_regularizer
    from techbench.training.run import build_run_model
    from techbench.workloads import load_dataset

    seen = set()
    for cfg in spec.runs:
        slots = ("optimizer", "batching", "regularizer", "stopping", "dropout")
        key = (cfg.workload, repr(cfg.data), repr(cfg.model), *(repr(cfg.components.get(s)) for s in slots))
        if key in seen:
            continue
        seen.add(key)
        try:
            data = load_dataset(cfg.data)
            config = apply_batching(cfg.as_dict(), len(data.x_train))
            model = build_run_model(config, data)
            build_optimizer(config["optimizer"], model)
            build_regularizer(config["regularizer"], model, len(data.x_train))
            build_stopping(config["stopping"])
        except (ValueError, RuntimeError, TypeError) as e:
            message = str(e) if str(e).startswith(cfg.technique) else f"{cfg.technique}: {e}"
            raise ConfigError(f"studies.{spec.name}.workloads.{cfg.workload}", message) from None
    if spec.runs:
        from techbench.training.trainer import make_trainer

        try:  # e.g. accelerator: gpu on a machine without one
            make_trainer(spec.runs[0].hardware, spec.runs[0].train)
        except Exception as e:  # Lightning raises its own MisconfigurationException types
            raise ConfigError("hardware", str(e).splitlines()[0]) from None


def run_study(params: Params, study: str, force: bool = False, tracker: Tracker | None = None) -> int:
    """Train every missing run of ``study``; returns how many were trained."""
    spec = params.study(study)
    preflight(spec)  # before the first MLflow write
    tracker = tracker or Tracker()
    if spec.probes:  # cheap, and a probe's impossible setting should stop the study before training
        from techbench.probe_runs import run_probes

        run_probes(spec, params.hardware, tracker, force)
    _warm_up(spec)
    todo = [(cfg, s) for cfg in spec.runs for s in range(spec.seeds)]
    pending: dict[str, tuple[RunConfig, list[int]]] = {}  # config hash -> (config, its unfinished seeds)
    for cfg, seed in pending_runs(tracker, todo, force):
        pending.setdefault(cfg.config_hash(), (cfg, []))[1].append(seed)
    trained = 0
    for cfg, seeds in pending.values():
        for result in _train(cfg, seeds, spec.execution, tracker):
            log.info(
                "%s: %s test/acc=%.4f (%s)",
                run_name(cfg, result.seed),
                result.outcome,
                result.metrics.get("test/acc", float("nan")),
                result.run_id,
            )
            trained += 1
    return trained


def _train(cfg: RunConfig, seeds: list[int], execution: str, tracker: Tracker):
    """The seeds of one config: as one vectorized stack when asked and possible, else one run at a time."""
    if cfg.family == "restarts":  # a procedure that trains several solutions per seed
        from techbench.training.restart_run import train_restart

        for seed in seeds:
            yield train_restart(cfg, seed, tracker, execution)
        return
    if execution == "vectorized" and len(seeds) > 1:
        from techbench.training.vectorized import train_seeds, vectorizable
        from techbench.workloads import load_dataset

        why = vectorizable(cfg, len(load_dataset(cfg.data).x_train))
        if why is None:
            yield from train_seeds(cfg, seeds, tracker)
            return
        log.info("%s: sequential seeds (%s)", cfg.label, why)
    for seed in seeds:
        yield train_one(cfg, seed, tracker=tracker)


def _warm_up(spec) -> None:
    """One untimed epoch of the study's first run, unlogged: the first fit of a process pays one-time costs
    (library initialization, kernel selection) that would otherwise inflate one run's wall time."""
    from dataclasses import replace

    if not spec.runs:
        return
    cfg = spec.runs[0]
    train_one(replace(cfg, train={**cfg.train, "epochs": 1}), seed=0)


def export_study(params: Params, study: str, tracker: Tracker | None = None, out_dir=None):
    """Write results/<study>/ from the MLflow runs of the current configuration."""
    import json

    from techbench import code_version
    from techbench.analysis.results import bias_variance, collect, write_study_results

    spec = params.study(study)
    configs = spec.runs
    tracker = tracker or Tracker()
    rows = collect(tracker, configs, spec.seeds)
    described = {
        f"{c.workload}/{c.label}": {
            **_effective(c),
            "config_hash": c.config_hash(),
            "seeds": spec.seeds,
            "code_version": code_version(),
        }
        for c in configs
    }
    out = write_study_results(study, rows, described, out_dir)
    decomposition = bias_variance(tracker, configs, rows)
    if decomposition:  # joins the DVC metrics, so `dvc metrics diff` shows bias² and variance too
        metrics = json.loads((out / "metrics.json").read_text())
        metrics["bias_variance"] = decomposition
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    probes = {}
    if spec.probes:
        from techbench.probe_runs import run_probes

        probes = run_probes(spec, params.hardware, tracker)
    write_probe_results(out, probes)  # written (possibly empty) for every study: a declared DVC output
    return out


def _effective(cfg: RunConfig) -> dict:
    """The configuration a run actually trained with (the batch regime applied), as the report shows it."""
    from techbench.techniques.batching import apply_batching
    from techbench.workloads import load_dataset

    return apply_batching(cfg.as_dict(), len(load_dataset(cfg.data).x_train))


def write_probe_results(out, probes: dict) -> None:
    """probes.json for the report; the probes' per-row means join metrics.json for `dvc metrics diff`."""
    import json

    from techbench.analysis.stats import mean_ci

    (out / "probes.json").write_text(json.dumps(probes, indent=1, default=str))
    summary: dict = {}
    for name, info in probes.items():
        for run in info["runs"]:
            for row in run["rows"]:
                for k, v in row.items():
                    if k != "row" and isinstance(v, (int, float)) and not isinstance(v, bool):
                        summary.setdefault(name, {}).setdefault(str(row["row"]), {}).setdefault(k, []).append(v)
    means = {
        p: {r: {k: round(mean_ci(v).mean, 6) for k, v in cols.items()} for r, cols in rows.items()}
        for p, rows in summary.items()
    }
    metrics_file = out / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    metrics["probes"] = means
    metrics_file.write_text(json.dumps(metrics, indent=2, sort_keys=True))
