"""MLflow runs of the current configuration -> self-describing result files under results/<study>/.

Only runs whose config_hash matches the current params.yaml (and code) are read, so stale runs left in
MLflow by an earlier configuration never leak into a report.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from techbench.analysis.stats import mean_ci
from techbench.config import RunConfig
from techbench.tracking import CURVE_KEYS, Tracker

RESULTS_DIR = Path("results")


def summarize_run(tracker: Tracker, run: Any, target_val_acc: float) -> dict[str, Any]:
    m = run.data.metrics
    curves = {k: tracker.history(run.info.run_id, k) for k in CURVE_KEYS}
    val_acc = curves["val/acc"]
    finite = [(v, i) for i, v in enumerate(val_acc) if math.isfinite(v)]
    best = max(finite, key=lambda t: (t[0], -t[1]))[1] if finite else None
    row = {
        "run_id": run.info.run_id,
        "technique": run.data.tags.get("technique"),
        "variant": run.data.tags.get("variant", "default"),
        "workload": run.data.tags.get("workload", "default"),
        "machine": run.data.tags.get("machine", "unknown"),
        "execution": run.data.tags.get("execution", "sequential"),
        "seed": int(run.data.tags["seed"]),
        "outcome": run.data.tags.get("outcome", "completed"),
        "test_acc": m.get("test/acc"),
        "test_loss": m.get("test/loss"),
        # Restart procedures have no per-epoch curve; their kept solution's validation loss stands in.
        "final_val_loss": _last(curves["val/loss"]) if curves["val/loss"] else m.get("final/val_loss"),
        "final_val_acc": _last(val_acc),
        "best_epoch": None if best is None else best + 1,  # epochs trained, 1-based
        "best_val_acc": None if best is None else val_acc[best],
        "fit_s": m.get("time/fit_s"),
        "epochs_run": m.get("epochs_run"),
        "diverged_step": m.get("diverged_step"),
        "train_final_acc": m.get("train/final_acc"),
        "gen_gap": m.get("gen_gap"),
        "updates": m.get("updates"),
        "steps_per_epoch": m.get("steps_per_epoch"),
        "throughput": m.get("throughput/samples_per_s"),
        "effective_batch": m.get("effective_batch"),
        "peak_memory_mb": m.get("memory/step_mb"),
        "n_params": _num(run.data.params.get("n_params")),
        "n_train": _num(run.data.params.get("n_train")),
        **{key: m.get(metric) for key, metric in GENERALIZATION_METRICS.items()},
        "learned_p": {k.split("dropout/p_", 1)[1]: v for k, v in m.items() if k.startswith("dropout/p_")},
        "curves": curves,
    }
    if any(k.startswith("restart/") for k in m):  # a restart procedure: its solutions and own measures
        row["members"] = {
            k.split("/", 1)[1]: tracker.history(run.info.run_id, k) for k in m if k.startswith("restart/")
        }
        row["procedure"] = {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("procedure/")}
        row["procedure_curves"] = {
            k.split("/", 1)[1]: tracker.history(run.info.run_id, k) for k in m if k.startswith("curve/")
        }
        row["compute_epochs"] = m.get("compute/epochs")
    if target_val_acc > 0:
        hit = next((i for i, v in enumerate(val_acc) if math.isfinite(v) and v >= target_val_acc), None)
        times = np.cumsum([t if math.isfinite(t) else 0.0 for t in curves["time/epoch_s"]])
        row["epochs_to_target"] = None if hit is None else hit + 1
        row["seconds_to_target"] = None if hit is None else float(times[hit])
        spe = row["steps_per_epoch"]
        row["updates_to_target"] = None if hit is None or spe is None else (hit + 1) * spe
    return row


# row key -> MLflow metric, for the generalization studies (absent metrics stay None).
GENERALIZATION_METRICS = {
    "weights_l2": "weights/l2_norm",
    "zero_frac": "weights/zero_frac",
    "near_zero_frac": "weights/near_zero_frac",
    "ece": "calibration/ece",
    "mc_acc": "mc/test_acc",
    "mc_nll": "mc/test_nll",
    "mc_ece": "mc/test_ece",
    "stop_epoch": "stop/epoch",
    "stop_fired": "stop/fired",
    "stop_best_epoch": "stop/best_epoch",
    "epochs_saved": "stop/epochs_saved",
    "test_acc_last": "stop/test_acc_last",
    "test_acc_best": "stop/test_acc_best",
}


def _num(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _last(values: list[float]) -> float | None:
    return values[-1] if values else None


def collect(tracker: Tracker, configs: list[RunConfig], seeds: int) -> list[dict[str, Any]]:
    """One summary per (config, seed) that has a FINISHED run; the newest wins if there are several."""
    rows = []
    for cfg in configs:
        for seed in range(seeds):
            run = tracker.finished_run(cfg.study, cfg.config_hash(), seed)
            if run is not None:
                rows.append(summarize_run(tracker, run, cfg.train["target_val_acc"]))
    return rows


SUMMARY_METRICS = (
    "test_acc",
    "test_loss",
    "final_val_loss",
    "best_epoch",
    "fit_s",
    "epochs_to_target",
    "seconds_to_target",
    "updates_to_target",
    "gen_gap",
    "throughput",
    "peak_memory_mb",
    *GENERALIZATION_METRICS,
)


def aggregate(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per workload, per technique (and variant): mean, CI half-width and n of the headline numbers."""
    out: dict[str, dict[str, Any]] = {}
    for workload, label in sorted({(r["workload"], _label(r)) for r in rows}):
        group = [r for r in rows if _label(r) == label and r["workload"] == workload]
        entry: dict[str, Any] = {"n": len(group), "diverged": sum(r["outcome"] == "diverged" for r in group)}
        for metric in SUMMARY_METRICS:
            est = mean_ci([r.get(metric) for r in group if r.get(metric) is not None])
            if est.n:
                entry[f"{metric}_mean"] = _round(est.mean)
                entry[f"{metric}_ci95"] = _round(est.half_width)
        out.setdefault(workload, {})[label] = entry
    return out


def _label(row: dict[str, Any]) -> str:
    return row["technique"] if row["variant"] == "default" else f"{row['technique']}@{row['variant']}"


def _round(x: float) -> float | None:
    return round(float(x), 6) if math.isfinite(x) else None


def mean_curves(rows: list[dict[str, Any]], key: str) -> list[float]:
    """Per-epoch mean over the runs' curves (NaN-aware; runs that stopped early just end)."""
    curves = [r["curves"][key] for r in rows if r["curves"].get(key)]
    if not curves:
        return []
    length = max(len(c) for c in curves)
    padded = np.full((len(curves), length), np.nan)
    for i, c in enumerate(curves):
        padded[i, : len(c)] = c
    with np.errstate(all="ignore"):
        return [float(v) for v in np.nanmean(padded, axis=0)]


def write_study_results(
    study: str, rows: list[dict[str, Any]], configs: dict[str, Any], out_dir: Path | None = None
) -> Path:
    """results/<study>/runs.json (everything the report needs), metrics.json (DVC metrics) and
    curves/<technique>.csv (DVC plots: per-epoch means over seeds)."""
    out = (out_dir or RESULTS_DIR) / study
    if (out / "curves").is_dir():  # curves of techniques no longer in the study must not linger
        for old in (out / "curves").glob("*.csv"):
            old.unlink()
    (out / "curves").mkdir(parents=True, exist_ok=True)
    (out / "runs.json").write_text(
        json.dumps({"study": study, "configs": configs, "runs": rows}, indent=1, default=_json)
    )
    (out / "metrics.json").write_text(json.dumps(aggregate(rows), indent=2, sort_keys=True))
    for workload, label in sorted({(r["workload"], _label(r)) for r in rows}):
        group = [r for r in rows if _label(r) == label and r["workload"] == workload]
        cols = {k: mean_curves(group, k) for k in ("train/loss", "val/loss", "val/acc", "lr")}
        n = max((len(v) for v in cols.values()), default=0)
        lines = ["epoch,train_loss,val_loss,val_acc,lr"]
        for e in range(n):
            vals = [cols[k][e] if e < len(cols[k]) else float("nan") for k in cols]
            lines.append(",".join([str(e + 1)] + [f"{v:.6g}" for v in vals]))
        (out / "curves" / f"{workload}__{label.replace('/', '_')}.csv").write_text("\n".join(lines) + "\n")
    return out


def _json(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


def bias_variance(tracker: Tracker, configs: list[RunConfig], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per workload and variant: the decomposition of the test error over seeds (runs that saved their test
    probabilities, ``train.save_predictions``); {} when no run did."""
    import tempfile

    from techbench.analysis.bias_variance import decompose_probs
    from techbench.workloads import load_dataset

    out: dict[str, Any] = {}
    by_id = {r["run_id"]: r for r in rows}
    for cfg in configs:
        if not cfg.train.get("save_predictions"):
            continue
        group = [r for r in by_id.values() if r["workload"] == cfg.workload and _label(r) == cfg.label]
        probs = []
        with tempfile.TemporaryDirectory() as tmp:
            for r in sorted(group, key=lambda r: r["seed"]):
                try:
                    path = tracker.client.download_artifacts(r["run_id"], "predictions/test_probs.npy", tmp)
                except Exception:  # an older run without the artifact: leave it out of the decomposition
                    continue
                probs.append(np.load(path).astype(np.float64))
        if len(probs) >= 2:
            y = load_dataset(cfg.data).y_test.numpy()
            parts = decompose_probs(np.stack(probs), y)
            out.setdefault(cfg.workload, {})[cfg.label] = {k: _round(float(v)) for k, v in parts.items()}
    return out
