"""Wall time of K seeds of the MNIST-1D MLP trained one after another vs as one vectorized stack
(`execution: vectorized`), K = 1, 4, 16. Target: 16 vectorized seeds in at most 3x the time of one seed.
Writes (params.yaml paths.benchmarks, default benchmarks/results/) seeds_parallel.json, which the report shows.

    make bench
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch
from step_overhead import BATCH, EPOCHS, adam_mlp_config, timed  # the same workload as the step-overhead benchmark

from techbench.paths import read_paths
from techbench.training.single import train_single
from techbench.training.stacked import train_stacked

KS, REPEATS = (1, 4, 16), 3
OUT = Path(read_paths()["benchmarks"]) / "seeds_parallel.json"  # params.yaml paths.benchmarks


def main() -> None:
    cfg = adam_mlp_config()
    train_single(cfg, 0), train_stacked(cfg, [0, 1])  # warm-up: dataset cache, first-call allocations
    one = timed(lambda: train_single(cfg, 0), REPEATS)
    result = {
        "what": f"MNIST-1D MLP 100-100, Adam, {EPOCHS} epochs, batch {BATCH}: whole runs (fit, test, metrics)",
        "hardware": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "one_seed_s": one,
        "repeats": f"median of {REPEATS} for one seed and for each vectorized K; sequential K runs once",
    }
    for k in KS:
        seeds = list(range(k))
        sequential = timed(lambda seeds=seeds: [train_single(cfg, s) for s in seeds])
        vectorized = timed(lambda seeds=seeds: train_stacked(cfg, seeds), REPEATS)
        result[f"k{k}_sequential_s"] = sequential
        result[f"k{k}_vectorized_s"] = vectorized
        result[f"k{k}_vectorized_over_one_seed"] = vectorized / one
        result[f"k{k}_speedup"] = sequential / vectorized
    result["target_16_seeds_within_3x_one_seed"] = result["k16_vectorized_over_one_seed"] <= 3.0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
