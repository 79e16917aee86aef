"""One run: (run config, seed) -> a trained model, its metrics in MLflow, and a small result record.

The composition root of the package: build data, model, module, logger and trainer; fit; test.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch

from techbench.config import RunConfig
from techbench.techniques.batching import apply_batching
from techbench.techniques.early_stopping import build_stopping
from techbench.tracking import Tracker, flatten
from techbench.training.best_weights import BestWeights
from techbench.training.evaluation import evaluate, post_fit_metrics
from techbench.training.module import TechniqueModule
from techbench.training.trainer import make_trainer
from techbench.workloads import InMemoryLoader, build_model, load_dataset

for _name in ("lightning.pytorch", "lightning.fabric", "lightning"):
    logging.getLogger(_name).setLevel(logging.ERROR)
# Noise that says nothing about a run: we log per epoch on purpose, and a dependency's deprecation.
warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
warnings.filterwarnings("ignore", message=".*LeafSpec.*")
# A diverged step is skipped on purpose by returning None.
warnings.filterwarnings("ignore", message=".*training_step. returned .None.*")


@dataclass(frozen=True)
class RunResult:
    run_id: str | None
    seed: int
    metrics: dict[str, float]
    outcome: str  # "completed" or "diverged"
    diverged_step: int | None = None
    model: Any = None  # the trained nn.Module (the kept weights), for callers that measure it further


def run_name(cfg: RunConfig, seed: int) -> str:
    return f"{cfg.label}/{cfg.workload}/seed{seed}"


def run_tags(cfg: RunConfig, seed: int) -> dict[str, str]:
    from techbench import code_version

    return {
        "study": cfg.study,
        "family": cfg.family,
        "technique": cfg.technique,
        "variant": cfg.variant,
        "workload": cfg.workload,
        "seed": str(seed),
        "config_hash": cfg.config_hash(),
        "code_version": code_version(),
        "machine": machine(),
    }


def machine() -> str:
    """Where a run trained (CPU model and cores, GPU, torch version): reports show the training machine."""
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}"


class _Loaders(L.LightningDataModule):
    """Hands Lightning in-memory loaders, sharded by the trainer's rank once it is known."""

    def __init__(self, data, batch_size: int, seed: int):
        super().__init__()
        self.data, self.batch_size, self.seed = data, batch_size, seed

    def _loader(self, x, y, shuffle: bool):
        t = self.trainer
        return InMemoryLoader(x, y, self.batch_size, shuffle, self.seed, t.global_rank, t.world_size)

    def train_dataloader(self):
        return self._loader(self.data.x_train, self.data.y_train, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.data.x_val, self.data.y_val, shuffle=False)

    def test_dataloader(self):
        return self._loader(self.data.x_test, self.data.y_test, shuffle=False)


def train_one(
    cfg: RunConfig,
    seed: int,
    tracker: Tracker | None = None,
    logger: Any = None,
    callbacks: list | None = None,
    parent_run_id: str | None = None,
) -> RunResult:
    """Train and test one (config, seed). Logs to ``logger`` or a new MLflow run of ``tracker``."""
    L.seed_everything(seed, workers=True, verbose=False)
    data = load_dataset(cfg.data, seed)
    n_train = len(data.x_train)
    # The effective config: the batch regime decides batch size, accumulation and (large batch) optimizer.
    config = apply_batching(cfg.as_dict(), n_train)
    model = build_run_model(config, data)
    train = config["train"]
    module = TechniqueModule(model, config, data.num_classes, n_train)
    if logger is None and tracker is not None:
        logger = tracker.logger(cfg.study, run_name(cfg, seed), run_tags(cfg, seed), parent_run_id)
    if logger:
        logger.log_hyperparams({**flatten(config), "seed": seed, "n_params": _n_params(model), "n_train": n_train})
    step_mb = _step_memory_mb(model, config, data)
    stopping = config.get("stopping") or {"name": "fixed_budget"}
    criteria = build_stopping(stopping)
    # The early-stopping study records best-vs-last for every rule, the fixed budget included.
    keep_best = criteria or stopping.get("restore_best") or cfg.family == "early_stopping"
    best = BestWeights() if keep_best else None
    all_callbacks = [*(callbacks or []), *criteria, *([best] if best else [])]
    trainer = make_trainer(cfg.hardware, train, logger=logger or False, callbacks=all_callbacks)
    datamodule = _Loaders(data, train["batch_size"], seed)

    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    fit_s = time.perf_counter() - start
    metrics = _stopping_metrics(module, criteria, best, stopping, data, train) if best else {}
    tested = trainer.test(module, datamodule=datamodule, verbose=False)
    metrics.update({k: float(v) for k, v in (tested[0] if tested else {}).items()})
    metrics["time/fit_s"] = fit_s
    metrics["epochs_run"] = float(len(module.epoch_times))
    metrics.update(_throughput(module, trainer, train, n_train, fit_s))
    metrics["memory/step_mb"] = step_mb
    metrics["train/final_acc"] = evaluate(model, data.x_train, data.y_train)["acc"]
    if "test/acc" in metrics:
        metrics["gen_gap"] = metrics["train/final_acc"] - metrics["test/acc"]
    extra, probs = post_fit_metrics(model, config, data)
    metrics.update(extra)
    outcome = "diverged" if module.diverged else "completed"
    if module.diverged:
        metrics["diverged_step"] = float(module.diverged_step)
    if logger and trainer.is_global_zero:
        logger.log_metrics({k: v for k, v in metrics.items() if not k.startswith("test/")})
        if train["save_predictions"]:
            _log_predictions(logger, probs)
        logger.experiment.set_tag(logger.run_id, "outcome", outcome)
        # Lightning marks the run FINISHED when fit ends; only this tag says its test metrics are written too.
        logger.experiment.set_tag(logger.run_id, "complete", "1")
        logger.finalize("success")
    return RunResult(
        run_id=logger.run_id if logger and trainer.is_global_zero else None,  # only rank 0 holds a run
        seed=seed,
        metrics=metrics,
        outcome=outcome,
        diverged_step=module.diverged_step,
        model=model,
    )


def build_run_model(config: dict[str, Any], data) -> torch.nn.Module:
    """The model a run trains: its spec (widened by width-scaled dropout) with the dropout variant applied."""
    from techbench.techniques.dropout import apply_dropout, model_spec_for

    model = build_model(model_spec_for(config), data.input_shape, data.num_classes)
    return apply_dropout(config.get("dropout") or {"name": "none"}, model, len(data.x_train))


def _stopping_metrics(module, criteria, best, stopping, data, train) -> dict[str, float]:
    """Epoch the criterion stopped at, the best-validation epoch, and test accuracy of the last and of the
    best weights; with ``restore_best`` the best weights are loaded so the run's test/* metrics are theirs."""
    epochs_run = len(module.epoch_times)
    last = evaluate(module.model, data.x_test, data.y_test)
    kept = {k: v.clone() for k, v in module.state_dict().items()}
    module.load_state_dict(best.state())
    best_eval = evaluate(module.model, data.x_test, data.y_test)
    if not stopping.get("restore_best"):
        module.load_state_dict(kept)
    fired = next((c.stopped_epoch_run for c in criteria if getattr(c, "stopped_epoch_run", None)), None)
    return {
        "stop/epoch": float(fired or epochs_run),
        "stop/fired": float(fired is not None),
        "stop/best_epoch": float(best.best_epoch),
        "stop/epochs_saved": float(train["epochs"] - epochs_run),
        "stop/test_acc_last": last["acc"],
        "stop/test_acc_best": best_eval["acc"],
        "stop/test_loss_last": last["loss"],
        "stop/test_loss_best": best_eval["loss"],
    }


def _log_predictions(logger, probs: torch.Tensor) -> None:
    """Test-set probabilities as an artifact (float16 .npy), for decompositions over seeds."""
    import tempfile
    from pathlib import Path

    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "test_probs.npy"
        np.save(path, probs.numpy().astype(np.float16))
        logger.experiment.log_artifact(logger.run_id, str(path), "predictions")


def _throughput(module, trainer, train: dict, n_train: int, fit_s: float) -> dict[str, float]:
    """Updates per epoch, updates made, and examples processed per second of fit time."""
    per_rank = n_train // max(trainer.world_size, 1)
    batches = -(-per_rank // train["batch_size"])
    steps_per_epoch = max(batches // train["accumulate_grad_batches"], 1)
    epochs = len(module.epoch_times)
    return {
        "steps_per_epoch": float(steps_per_epoch),
        "updates": float(trainer.global_step),
        "throughput/samples_per_s": n_train * epochs / fit_s if fit_s > 0 else float("nan"),
        "effective_batch": float(train["batch_size"] * train["accumulate_grad_batches"] * trainer.world_size),
    }


def _step_memory_mb(model: torch.nn.Module, config: dict, data) -> float:
    """Peak memory of one training step at the run's batch size (parameters, gradients, optimizer state,
    batch, activations), measured on a copy so the run itself is untouched: CUDA allocator peak on a GPU,
    live tensor bytes on CPU (see probes/memory.py)."""
    import copy

    import torch.nn.functional as F

    from techbench.probes.memory import peak_step_memory
    from techbench.techniques.optimizers import OPTIMIZERS, build_optimizer

    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[]):
        clone = copy.deepcopy(model)
        optimizer = build_optimizer(config["optimizer"], clone)
        batch = config["train"]["batch_size"]
        x, y = data.x_train[:batch].to(device), data.y_train[:batch].to(device)
        plain = OPTIMIZERS.get(config["optimizer"]["name"]).meta.get("closure", "none") == "none"

        def step():
            optimizer.zero_grad()
            F.cross_entropy(clone(x), y).backward()
            if plain:  # closure-driven optimizers (L-BFGS, Newton): forward + backward only
                optimizer.step()

        step()  # optimizer state is allocated lazily on the first step
        return peak_step_memory(step, device, resident=[clone, optimizer, x, y]) / 2**20


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
