"""The single executor: one (config, seed) trained by one Lightning fit, then the shared post-fit evaluation."""

from __future__ import annotations

import lightning as L

from techbench.specs import RunConfig
from techbench.training.effective import build_run_model, resolve
from techbench.training.evaluation import measure, select_weights, throughput
from techbench.training.fit import fit, step_memory
from techbench.training.result import RunResult
from techbench.workloads import DataSplits, load_dataset


def train_single(cfg: RunConfig, seed: int, callbacks: list | None = None, data: DataSplits | None = None) -> RunResult:
    """Train and test one (config, seed). ``callbacks`` join the run's own (e.g. a tuning trial's pruning)."""
    L.seed_everything(seed, workers=True, verbose=False)
    data = data if data is not None else load_dataset(cfg.data, seed)
    run = resolve(cfg, data)
    model = build_run_model(run, data)
    memory = step_memory(model, run, data)
    result = fit(run, model, data, seed, callbacks)
    metrics = select_weights(run, data, result)
    measured, probs = measure(run, model, data)
    metrics.update(measured)
    metrics.update({"time/fit_s": result.seconds, "epochs_run": float(result.epochs_run)})
    metrics.update(throughput(run, result.log.global_step, result.epochs_run, result.seconds))
    metrics.update(memory)
    histories = result.log.histories()
    return RunResult.ended(run, seed, metrics, histories, result.log.diverged_step, model, (probs, data.y_test))
