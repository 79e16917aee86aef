"""The one post-fit evaluation every executor shares: each family chooses the weights it keeps
(``select_weights``), then the kept model is scored on test and train, its calibration measured, and each family
adds its own measurements (``measure``). Also the record of a run's wall time, updates and throughput."""

from __future__ import annotations

import os
import platform

import torch
from torch import nn

from techbench.specs import EffectiveRun
from techbench.techniques import FAMILIES
from techbench.workloads import DataSplits
from techbench.workloads.evaluation import evaluate, predict_probs, scores


def select_weights(run: EffectiveRun, data: DataSplits, fit) -> dict[str, float]:
    """Every family's choice of the weights a fit keeps (e.g. restored best-validation weights), in order."""
    out: dict[str, float] = {}
    for family in FAMILIES:
        out.update(family.select_weights(run[family.name], fit.fit_for(family.name, run, data)))
    return out


def measure(run: EffectiveRun, model: nn.Module, data: DataSplits) -> tuple[dict[str, float], torch.Tensor]:
    """Test, kept-weights validation and train scores, calibration and every family's measurements of a trained
    model; and its test probabilities (kept as an artifact by runs that save predictions)."""
    test = evaluate(model, data.x_test, data.y_test)
    metrics = {"test/acc": test["acc"], "test/loss": test["loss"]}
    # The validation score of the weights the run keeps: what every choice (best technique, tuned trial) is made
    # on, so a choice never needs the test split.
    val = evaluate(model, data.x_val, data.y_val)
    metrics.update({"val/kept_acc": val["acc"], "val/kept_loss": val["loss"]})
    metrics["train/final_acc"] = evaluate(model, data.x_train, data.y_train)["acc"]
    metrics["gen_gap"] = metrics["train/final_acc"] - metrics["test/acc"]
    probs = predict_probs(model, data.x_test)
    metrics.update({f"calibration/{k}": v for k, v in scores(probs, data.y_test).items() if k != "acc"})
    for family in FAMILIES:
        metrics.update(family.measure(run[family.name], model, data))
    return metrics, probs


def throughput(run: EffectiveRun, updates: int, epochs: int, seconds: float, stack: int = 1) -> dict[str, float]:
    """Updates per epoch and made, examples per second of fit time (a stack of K seeds processes K times the
    examples), and the batch of one update."""
    return {
        "steps_per_epoch": float(run.steps_per_epoch),
        "updates": float(updates),
        "throughput/samples_per_s": run.n_train * epochs * stack / seconds if seconds > 0 else float("nan"),
        "effective_batch": float(run.train["batch_size"] * run.train["accumulate_grad_batches"] * run.world_size),
    }


def machine() -> str:
    """Where a run trained (CPU model and cores, GPU, torch version): reports show the training machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}"
