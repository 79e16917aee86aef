"""`techbench tune --workers N`: N worker processes on this machine share one Optuna study, then the calling
process evaluates the tuned configurations once. Nothing here schedules trials: each worker asks Optuna
for the next one, and the storage's heartbeats and shared budget (trial_store.py) decide what a killed
worker leaves behind. Workers on other machines run the same command with ``--trials-only``."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Any

import torch

from techbench.errors import ConfigError

log = logging.getLogger("techbench")


def check_workers(workers: int, hardware: dict[str, Any]) -> None:
    if workers < 1:
        raise ConfigError("--workers", f"{workers} is out of range: must be >= 1")
    if workers > 1 and hardware["devices"] != 1:
        raise ConfigError(
            "hardware.devices",
            f"{hardware['devices']!r} with --workers {workers}: each worker trains its trials on one device "
            "(set devices: 1; a DDP run of several devices is one `techbench run`)",
            ["1"],
        )


# Multi-process strategies that start their processes from the one that called fit: the Optuna trial was asked
# there, and Optuna's pruning callback reports through the RDB storage from rank 0 of the fit.
SPAWNING = ["ddp_spawn", "ddp_fork", "ddp_notebook"]


def check_tune_hardware(hardware: dict[str, Any]) -> None:
    """Tuning over several devices per trial needs one node and a spawning strategy: under ``ddp`` (and
    ``auto``, which picks it) every rank re-runs the whole command and would ask Optuna for trials of its own."""
    if int(hardware["num_nodes"]) > 1:  # each node's command would ask Optuna for trials of its own
        raise ConfigError(
            "hardware.num_nodes",
            f"{hardware['num_nodes']} nodes per trial cannot tune: run a worker on each machine instead "
            "(`techbench tune … --storage postgresql+psycopg://… --trials-only`)",
            ["1"],
        )
    if hardware["devices"] != 1 and hardware["strategy"] not in SPAWNING:
        raise ConfigError(
            "hardware.strategy",
            f"{hardware['strategy']!r} with devices {hardware['devices']!r} cannot tune: each rank would ask "
            "Optuna for its own trials (use a spawning strategy, or --workers N with devices: 1)",
            SPAWNING,
        )


def worker_env(i: int, workers: int, hardware: dict[str, Any]) -> dict[str, str]:
    """Worker ``i``'s environment: one GPU of the visible ones (round robin) when the accelerator is a GPU,
    none otherwise; and its share of the CPU cores, so N workers do not each start a thread per core."""
    env = dict(os.environ)
    accelerator = hardware["accelerator"]
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = [d for d in visible.split(",") if d] if visible else [str(d) for d in range(torch.cuda.device_count())]
    env["CUDA_VISIBLE_DEVICES"] = devices[i % len(devices)] if on_gpu and devices else ""
    if "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max((os.cpu_count() or 1) // workers, 1))
    env["TECHBENCH_WORKER"] = str(i)
    return env


def run_workers(argv: list[str], workers: int, hardware: dict[str, Any]) -> list[int]:
    """Start ``workers`` processes of ``techbench <argv> --trials-only`` and wait for all; their exit codes."""
    cmd = [sys.executable, "-m", "techbench.cli", *argv, "--trials-only"]
    procs = [subprocess.Popen(cmd, env=worker_env(i, workers, hardware)) for i in range(workers)]
    log.info("tuning with %d workers: pids %s", workers, ", ".join(str(p.pid) for p in procs))
    try:
        codes = [p.wait() for p in procs]
    except BaseException:
        for p in procs:
            p.terminate()
        raise
    for i, code in enumerate(codes):
        if code:
            log.warning("worker %d (pid %d) ended with exit code %d", i, procs[i].pid, code)
    return codes
