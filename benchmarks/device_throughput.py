"""Throughput on one accelerator: the techbench path against a plain torch loop, 16 stacked trials against one,
and the tuning rate of one worker per device.

Workloads: a small timm ViT (test_vit, 16x16 digits, 4x4 patches, batch 64: the pretraining stage's) and the
MNIST-1D MLP (100-100, batch 128). Both loops train EPOCHS epochs with a validation pass each, on the same device,
batches moved to it one at a time as Lightning moves them (the plain loop is step_overhead.raw_torch). Targets:
techbench within 0.95x of the plain loop's examples/s on a GPU; 16 stacked trials within 3x one trial. Trials
per hour with one worker per device is 3600 / one trial's whole run (fit, test, metrics) per device, marked
estimated: workers share no device, but they do share the host's cores. Writes device_throughput_<device>.json
into params.yaml's paths.benchmarks.

    python benchmarks/device_throughput.py [gpu|cpu]     # default: gpu when CUDA is there, else cpu
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch
from stacked_trials import lr_trials
from step_overhead import raw_torch, timed  # the plain loop: the same for CPU and device

from techbench.config import parse_params
from techbench.paths import read_paths
from techbench.training.evaluation import machine
from techbench.training.single import train_single
from techbench.training.stacked import refusal, train_members
from techbench.workloads import load_dataset

EPOCHS, REPEATS, TRIALS = 10, 3, 16
WORKLOADS = {
    "timm_vit": {
        "data": {"name": "digits", "image_size": 16},
        "model": {"name": "timm", "arch": "test_vit", "options": {"img_size": 16, "patch_size": 4}},
        "batch_size": 64,
    },
    "mlp": {"data": {"name": "mnist1d"}, "model": {"name": "mlp", "hidden": [100, 100]}, "batch_size": 128},
}


def config(workload: str, accelerator: str):
    w = WORKLOADS[workload]
    study = {
        "family": "optimizer",
        "techniques": ["adam"],
        "seeds": 1,
        "data": w["data"],
        "model": w["model"],
        "train": {"epochs": EPOCHS, "batch_size": w["batch_size"]},
    }
    raw = {"hardware": {"accelerator": accelerator, "devices": 1}, "studies": {"bench": study}}
    return parse_params(raw).studies["bench"].run("adam")


def measure(workload: str, accelerator: str, device: torch.device) -> dict:
    cfg = config(workload, accelerator)
    n_train = len(load_dataset(cfg.data).x_train)
    raw_torch(cfg, device), train_single(cfg, 0)  # warm-up: dataset cache, kernels, allocator
    plain, fit, whole = [], [], []
    for _ in range(REPEATS):  # interleaved, so a slow spell of the machine hits both
        plain.append(raw_torch(cfg, device))
        start = time.perf_counter()
        fit.append(train_single(cfg, 0).metrics["time/fit_s"])
        whole.append(time.perf_counter() - start)
    one_trial = statistics.median(whole)
    out = {
        "what": f"{cfg.workload}, Adam, {EPOCHS} epochs, batch {cfg.train['batch_size']}, validation each epoch",
        "plain_loop_examples_per_s": EPOCHS * n_train / statistics.median(plain),
        "techbench_examples_per_s": EPOCHS * n_train / statistics.median(fit),
        "one_trial_s": one_trial,
        "trials_per_hour_per_device_estimated": 3600 / one_trial,
    }
    out["techbench_over_plain_loop"] = out["techbench_examples_per_s"] / out["plain_loop_examples_per_s"]
    out["target_within_0.95x_plain_loop"] = out["techbench_over_plain_loop"] >= 0.95
    trials = [(c, 1000) for c in lr_trials(cfg, TRIALS)]
    why = refusal(trials)
    if why is not None:
        out[f"trials{TRIALS}_stacked"] = f"refused: {why}"
        return out
    stacked = timed(lambda: train_members(trials), REPEATS)
    out[f"trials{TRIALS}_stacked_s"] = stacked
    out[f"trials{TRIALS}_stacked_over_one_trial"] = stacked / one_trial
    out[f"target_{TRIALS}_trials_within_3x"] = stacked / one_trial <= 3.0
    return out


def main(argv: list[str]) -> None:
    accelerator = argv[0] if argv else ("gpu" if torch.cuda.is_available() else "cpu")
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    result = {"device": name, "machine": machine(), "repeats": f"median of {REPEATS}"}
    for workload in WORKLOADS:
        result[workload] = measure(workload, accelerator, device)
        print(workload, json.dumps(result[workload], indent=2), flush=True)
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    out = Path(read_paths()["benchmarks"]) / f"device_throughput_{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
