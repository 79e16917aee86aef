"""Per-epoch wall time of the techbench training path against a plain torch loop (MNIST-1D MLP).

Lightning's per-step overhead dominates tiny models; this measures what the in-memory loader and the lean
Trainer settings leave of it, beside the floor of Lightning itself: a minimal LightningModule (loss and
optimizer only) under the same Trainer settings. The three are timed in turn, REPEATS rounds, medians kept, so
drifts of a shared machine hit all three alike. Writes step_overhead.json into params.yaml's paths.benchmarks (default
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

import lightning as L
import torch
import torch.nn.functional as F

from techbench.config import parse_params
from techbench.paths import read_paths
from techbench.training.fit import Loaders
from techbench.training.single import train_single
from techbench.training.trainer import make_trainer
from techbench.workloads import InMemoryLoader, build_model, load_dataset

EPOCHS, BATCH, REPEATS = 20, 128, 5
OUT = Path(read_paths()["benchmarks"]) / "step_overhead.json"  # params.yaml paths.benchmarks


def timed(fn, repeats: int = 1) -> float:
    """Median wall time of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def raw_torch(cfg, device: torch.device | None = None) -> float:
    """``cfg``'s epochs in a hand-written loop on ``device`` (CPU by default), batches moved to it one at a time as
    Lightning moves them: Adam at techbench's default LR, one validation pass each epoch."""
    device = device or torch.device("cpu")
    data = load_dataset(cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg.model, data.input_shape, data.num_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = InMemoryLoader(data.x_train, data.y_train, cfg.train["batch_size"], shuffle=True, seed=0)
    x_val, y_val = data.x_val.to(device), data.y_val.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(cfg.train["epochs"]):
        model.train()
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(model(x.to(device)), y.to(device)).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            F.cross_entropy(model(x_val), y_val)
    sync()
    return time.perf_counter() - start


class MinimalModule(L.LightningModule):
    """The least a LightningModule can be: forward, loss, Adam."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        F.cross_entropy(self.model(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def minimal_lightning(cfg) -> float:
    data = load_dataset(cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    loaders = Loaders(data, BATCH, 0)
    trainer = make_trainer(cfg.hardware, {**cfg.train, "epochs": EPOCHS})
    start = time.perf_counter()
    trainer.fit(MinimalModule(model), datamodule=loaders)
    return time.perf_counter() - start


def adam_mlp_config(model: dict | None = None):
    """The benchmarks' workload: the MNIST-1D MLP (100-100) with Adam, EPOCHS epochs of batch BATCH (``model``:
    another model of the registry, with its defaults)."""
    raw = {
        "studies": {
            "bench": {
                "family": "optimizer",
                "techniques": ["adam"],
                "seeds": 1,
                "data": {"name": "mnist1d"},
                "model": model or {"name": "mlp", "hidden": [100, 100]},
                "train": {"epochs": EPOCHS, "batch_size": BATCH},
            }
        }
    }
    return parse_params(raw).studies["bench"].run("adam")


def main() -> None:
    cfg = adam_mlp_config()
    raw_torch(cfg), minimal_lightning(cfg), train_single(cfg, 0)  # warm-up: dataset cache, first calls
    torch_s, floor_s, lightning_s = [], [], []
    for _ in range(REPEATS):
        torch_s.append(raw_torch(cfg))
        floor_s.append(minimal_lightning(cfg))
        lightning_s.append(train_single(cfg, 0).metrics["time/fit_s"])
    steps = EPOCHS * len(InMemoryLoader(torch.zeros(3600), torch.zeros(3600), BATCH, False))
    result = {
        "what": f"MNIST-1D MLP, Adam, {EPOCHS} epochs, batch {BATCH}, train + validation each epoch",
        "hardware": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "raw_torch_s_median": statistics.median(torch_s),
        "minimal_lightning_s_median": statistics.median(floor_s),
        "techbench_lightning_s_median": statistics.median(lightning_s),
        "overhead_ratio": statistics.median(lightning_s) / statistics.median(torch_s),
        "minimal_lightning_ratio": statistics.median(floor_s) / statistics.median(torch_s),
        "target_techbench_within_1.25x_plain_loop": statistics.median(lightning_s) / statistics.median(torch_s) <= 1.25,
        "us_per_step_raw": 1e6 * statistics.median(torch_s) / steps,
        "us_per_step_minimal_lightning": 1e6 * statistics.median(floor_s) / steps,
        "us_per_step_techbench": 1e6 * statistics.median(lightning_s) / steps,
        "repeats": REPEATS,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
