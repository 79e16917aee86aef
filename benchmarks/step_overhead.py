"""Per-epoch wall time of the techbench training path against a plain torch loop (MNIST-1D MLP).

Lightning's per-step overhead dominates tiny models; this measures what the in-memory loader and the lean
Trainer settings leave of it. Writes step_overhead.json into params.yaml's paths.benchmarks (default
benchmarks/results/), which the report shows.

    make bench
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from techbench.config import parse_params
from techbench.paths import read_paths
from techbench.training.single import train_single
from techbench.workloads import InMemoryLoader, build_model, load_dataset

EPOCHS, BATCH, REPEATS = 20, 128, 3
OUT = Path(read_paths()["benchmarks"]) / "step_overhead.json"  # params.yaml paths.benchmarks


def raw_torch(cfg) -> float:
    data = load_dataset(cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = InMemoryLoader(data.x_train, data.y_train, BATCH, shuffle=True, seed=0)
    start = time.perf_counter()
    for _ in range(EPOCHS):
        model.train()
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            F.cross_entropy(model(data.x_val), data.y_val)
    return time.perf_counter() - start


def adam_mlp_config():
    """The benchmarks' workload: the MNIST-1D MLP (100-100) with Adam, EPOCHS epochs of batch BATCH."""
    raw = {
        "studies": {
            "bench": {
                "family": "optimizer",
                "techniques": ["adam"],
                "seeds": 1,
                "data": {"name": "mnist1d"},
                "model": {"name": "mlp", "hidden": [100, 100]},
                "train": {"epochs": EPOCHS, "batch_size": BATCH},
            }
        }
    }
    return parse_params(raw).studies["bench"].run("adam")


def main() -> None:
    cfg = adam_mlp_config()
    raw_torch(cfg), train_single(cfg, 0)  # warm-up: dataset cache, first-call allocations
    torch_s = [raw_torch(cfg) for _ in range(REPEATS)]
    lightning_s = [train_single(cfg, 0).metrics["time/fit_s"] for _ in range(REPEATS)]
    steps = EPOCHS * len(InMemoryLoader(torch.zeros(3600), torch.zeros(3600), BATCH, False))
    result = {
        "what": f"MNIST-1D MLP, Adam, {EPOCHS} epochs, batch {BATCH}, train + validation each epoch",
        "hardware": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "raw_torch_s_median": statistics.median(torch_s),
        "techbench_lightning_s_median": statistics.median(lightning_s),
        "overhead_ratio": statistics.median(lightning_s) / statistics.median(torch_s),
        "us_per_step_raw": 1e6 * statistics.median(torch_s) / steps,
        "us_per_step_techbench": 1e6 * statistics.median(lightning_s) / steps,
        "repeats": REPEATS,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
