"""A run record (records.RunRecord as data) -> one results row: its identity and sweep point as data, every
final metric, its per-epoch curves, and the numbers derived from them (best epoch, time to target, ...).
Pure: no tracker and no dataset."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from techbench.records import RunRecord

CURVE_KEYS = ("train/loss", "train/acc", "val/loss", "val/acc", "lr", "time/epoch_s")
# Final metrics exposed under a short row key, as the tables and sentences name them.
SHORT = {
    "test_acc": "test/acc",
    "test_loss": "test/loss",
    "fit_s": "time/fit_s",
    "epochs_run": "epochs_run",
    "diverged_step": "diverged_step",
    "train_final_acc": "train/final_acc",
    "gen_gap": "gen_gap",
    "updates": "updates",
    "steps_per_epoch": "steps_per_epoch",
    "throughput": "throughput/samples_per_s",
    "effective_batch": "effective_batch",
    "peak_memory_mb": "memory/step_mb",
    "compute_epochs": "compute/epochs",
}


def label(row: dict[str, Any]) -> str:
    return row["technique"] if row["variant"] == "default" else f"{row['technique']}@{row['variant']}"


def value(row: dict[str, Any], key: str) -> Any:
    """A row's derived value under ``key``, else its final metric of that name (e.g. "weights/l2_norm")."""
    return row[key] if key in row else row.get("metrics", {}).get(key)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def row_from_record(record: RunRecord, target_val_acc: float) -> dict[str, Any]:
    m, tags, h = record.metrics, record.tags, record.histories
    curves = {k: list(h.get(k, [])) for k in CURVE_KEYS}
    val_acc = curves["val/acc"]
    # The best epoch by the monitor the kept weights are chosen on (ModelCheckpoint: lowest val/loss, the first
    # of ties; NaN as +inf), so "best epoch" and the restored weights are the same epoch.
    finite = [(v, i) for i, v in enumerate(curves["val/loss"]) if _finite(v)]
    best = min(finite)[1] if finite else None
    row: dict[str, Any] = {
        "run_id": record.run_id,
        "config_hash": tags["config_hash"],
        "technique": tags["technique"],
        "variant": tags.get("variant", "default"),
        "workload": tags.get("workload", "default"),
        "sweep": dict(record.config.get("sweep") or {}),
        "machine": tags.get("machine", "unknown"),
        "execution": tags.get("execution", "sequential"),
        "seed": record.seed,
        "outcome": record.outcome,
        **{short: m.get(metric) for short, metric in SHORT.items()},
        # Procedures have no per-epoch curve; their kept solution's validation loss stands in.
        "final_val_loss": curves["val/loss"][-1] if curves["val/loss"] else m.get("final/val_loss"),
        "final_val_acc": val_acc[-1] if val_acc else m.get("final/val_acc"),
        "best_epoch": None if best is None else best + 1,  # epochs trained, 1-based
        "best_val_acc": None if best is None or best >= len(val_acc) else val_acc[best],
        # What every choice is made on: the validation accuracy of the weights the run keeps (older records:
        # the last epoch's, or a procedure's kept solution).
        "val_acc": m.get("val/kept_acc", val_acc[-1] if val_acc else m.get("final/val_acc")),
        "n_params": record.config.get("n_params"),
        "n_train": record.config.get("n_train"),
        "learned_p": {k.split("dropout/p_", 1)[1]: v for k, v in m.items() if k.startswith("dropout/p_")},
        "metrics": dict(m),
        "curves": curves,
    }
    if any(k.startswith("restart/") for k in h):  # a procedure: its solutions and its own measures
        row["members"] = {k.split("/", 1)[1]: v for k, v in h.items() if k.startswith("restart/")}
        row["procedure"] = {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("procedure/")}
        row["procedure_curves"] = {k.split("/", 1)[1]: v for k, v in h.items() if k.startswith("curve/")}
    if target_val_acc > 0:
        row.update(_time_to_target(curves, row["steps_per_epoch"], target_val_acc))
    return row


def _time_to_target(curves: dict[str, list[float]], steps_per_epoch: float | None, target: float) -> dict[str, Any]:
    """Epochs, seconds and updates until validation accuracy first reached the target; a run that never did
    is censored at its full length (``censored_at``), so averages over all seeds can count it."""
    hit = next((i for i, v in enumerate(curves["val/acc"]) if _finite(v) and v >= target), None)
    times = np.cumsum([t if _finite(t) else 0.0 for t in curves["time/epoch_s"]])
    epochs = len(curves["val/acc"])
    return {
        "epochs_to_target": None if hit is None else hit + 1,
        "seconds_to_target": None if hit is None or hit >= len(times) else float(times[hit]),
        "updates_to_target": None if hit is None or steps_per_epoch is None else (hit + 1) * steps_per_epoch,
        "censored_at": {
            "epochs": epochs,
            "seconds": float(times[-1]) if len(times) else None,
            "updates": None if steps_per_epoch is None else epochs * steps_per_epoch,
        },
    }
