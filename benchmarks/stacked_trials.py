"""Wall time of Optuna trials and seeds trained as one stack against one at a time, on 2 cores or whatever runs it:

- a learning-rate search of 16 trials of the MNIST-1D MLP (100-100, Adam, 20 epochs, batch 128) in one stack, and
  16 trials x 5 seeds, against one trial (targets: <= 3x and <= 8x one trial);
- 16 seeds of the MNIST-1D 1-D CNN in one stack against one seed (target: <= 4x);
- the whole protocol: tuning every technique of the `optimizers` study at 8 trials on its MNIST-1D MLP workload,
  8 trials per stack against one trial at a time (real Optuna and MLflow stores in a temporary folder).

Sequential times are measured where they take minutes at most and otherwise estimated as K x one run (marked
``_estimated``). Writes stacked_trials.json into params.yaml's paths.benchmarks, which the report shows.

    make bench
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from step_overhead import BATCH, EPOCHS, adam_mlp_config, timed  # the same workload as the step-overhead benchmark

from techbench.config import load_params
from techbench.paths import read_paths
from techbench.tracking import Tracker
from techbench.training.evaluation import machine
from techbench.training.single import train_single
from techbench.training.stacked import train_members, train_stacked
from techbench.tuning import tune

REPEATS, TRIALS, SEEDS = 3, 16, 5
OUT = Path(read_paths()["benchmarks"]) / "stacked_trials.json"  # params.yaml paths.benchmarks


def lr_trials(cfg, n: int):
    """n learning rates log-spaced over Adam's search space (1e-5 .. 1e-1), as n trials."""
    lrs = [10 ** (-5 + 4 * i / max(n - 1, 1)) for i in range(n)]
    return [cfg.with_technique_params({"lr": lr}, variant=f"trial{i}") for i, lr in enumerate(lrs)]


def lr_search(result: dict) -> None:
    cfg = adam_mlp_config()
    train_single(cfg, 0), train_stacked(cfg, [0, 1])  # warm-up: dataset cache, first-call allocations
    one = timed(lambda: train_single(cfg, 0), REPEATS)
    trials = lr_trials(cfg, TRIALS)
    stacked = timed(lambda: train_members([(c, 1000) for c in trials]), REPEATS)
    sequential = timed(lambda: [train_single(c, 1000) for c in trials])
    wide = timed(lambda: train_members([(c, 1000 + s) for c in trials for s in range(SEEDS)]))
    result["mlp"] = {
        "what": f"MNIST-1D MLP 100-100, Adam, {EPOCHS} epochs, batch {BATCH}: whole runs (fit, test, metrics)",
        "one_trial_s": one,
        f"trials{TRIALS}_stacked_s": stacked,
        f"trials{TRIALS}_sequential_s": sequential,
        f"trials{TRIALS}_stacked_over_one_trial": stacked / one,
        f"trials{TRIALS}_speedup": sequential / stacked,
        f"trials{TRIALS}x{SEEDS}_stacked_s": wide,
        f"trials{TRIALS}x{SEEDS}_sequential_s_estimated": one * TRIALS * SEEDS,
        f"trials{TRIALS}x{SEEDS}_stacked_over_one_trial": wide / one,
        "target_16_trials_within_3x": stacked / one <= 3.0,
        "target_16x5_within_8x": wide / one <= 8.0,
    }


def cnn_seeds(result: dict) -> None:
    cfg = adam_mlp_config(model={"name": "cnn1d"})
    train_stacked(cfg, [0, 1])
    one = timed(lambda: train_single(cfg, 0), REPEATS)
    stacked = timed(lambda: train_stacked(cfg, list(range(16))), REPEATS)
    result["cnn"] = {
        "what": f"MNIST-1D 1-D CNN (cnn1d defaults), Adam, {EPOCHS} epochs, batch {BATCH}",
        "one_seed_s": one,
        "seeds16_stacked_s": stacked,
        "seeds16_sequential_s_estimated": one * 16,
        "seeds16_stacked_over_one_seed": stacked / one,
        "target_16_seeds_within_4x": stacked / one <= 4.0,
    }


def whole_protocol(result: dict, trials: int = 8) -> None:
    """Tune every technique of the optimizers study on its first workload: a stack of 8 against one at a time."""
    params = load_params(Path("params.yaml"))
    spec = params.study("optimizers")
    tunable = [t for t in spec.techniques if _space(spec, t)]
    seconds = {}
    for stack in (trials, 1):
        with tempfile.TemporaryDirectory() as tmp:
            tracker = Tracker(f"sqlite:///{tmp}/mlflow.db")
            budget = replace(params.tuning["optimizers"], stack=stack, trial_seeds=1, sampler="tpe")
            start = time.perf_counter()
            for technique in tunable:
                tune(spec.run(technique), trials, 1000, 0, f"sqlite:///{tmp}/optuna.db", tracker, budget=budget)
            seconds[stack] = time.perf_counter() - start
    result["protocol"] = {
        "what": f"tune each of the {len(tunable)} techniques of study optimizers on workload "
        f"{spec.run(tunable[0]).workload} at {trials} trials (TPE, MLflow and Optuna stores included)",
        "techniques": tunable,
        f"stack{trials}_s": seconds[trials],
        "one_at_a_time_s": seconds[1],
        "speedup": seconds[1] / seconds[trials],
    }


def _space(spec, technique: str) -> bool:
    from techbench.techniques import FAMILIES

    return bool(FAMILIES[spec.family].registry.get(technique).search_space)


PARTS = {"mlp": lr_search, "cnn": cnn_seeds, "protocol": whole_protocol}


def main(parts: list[str]) -> None:
    """Measure ``parts`` (all by default; e.g. ``cnn protocol``), keeping the file's other parts."""
    kept = json.loads(OUT.read_text()) if parts and OUT.is_file() else {}
    result = {**kept, "machine": machine(), "repeats": f"median of {REPEATS} where a time is not marked estimated"}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    for name in parts or list(PARTS):
        PARTS[name](result)
        OUT.write_text(json.dumps(result, indent=2))  # written after each part: a long run keeps what it measured
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
