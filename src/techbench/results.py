"""The only writer and reader of results/<study>/: a study's results as one typed, self-describing object.

  runs.json     StudyResults: the family (its columns, summary metrics and findings hook), each technique's
                description and flags, each configuration as it trained (effective config, hash, seeds),
                and one row per finished run (analysis/rows.py: identity, sweep point as data, metrics, curves)
  probes.json   each probe's settings and per-seed results
  summary.json  per workload and configuration the means and CIs of every summarized number, bias² and
                variance, probe means
  metrics.json  the DVC metrics: summary.json's headline numbers only (see ``headline``)
  plots/<workload>.csv  the DVC plots: per-epoch means over seeds, one row per (epoch, configuration), drawn
                by .dvc/plots/techniques.json as one overlay of the configurations per curve
  tuning.json   the tuning summary of the study's tuned techniques (tuning_metrics.json: its DVC metrics;
                trials.json: every Optuna trial)

Torch-free: the report reads these files through this module alone.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = 2
CURVE_COLUMNS = {"train_loss": "train/loss", "val_loss": "val/loss", "val_acc": "val/acc", "lr": "lr"}


@dataclass
class StudyResults:
    study: str
    family: dict[str, Any] | None  # name, description, columns, summary, findings
    techniques: dict[str, dict[str, Any]]  # technique -> description and flags
    configs: dict[str, dict[str, Any]]  # "<workload>/<label>" -> configuration as trained
    runs: list[dict[str, Any]]  # rows, see analysis/rows.py
    probes: dict[str, Any] = field(default_factory=dict)
    baselines: dict[str, str] = field(default_factory=dict)  # workload -> label the others are tested against
    schema: int = SCHEMA

    def workloads(self) -> list[str]:
        """Workloads in the order the study lists them (configs keep params order)."""
        order = list(dict.fromkeys(c["workload"] for c in self.configs.values()))
        seen = {r["workload"] for r in self.runs}
        return [w for w in order if w in seen] + sorted(seen - set(order))


def _clean(o: Any) -> Any:
    """JSON without NaN/inf (DVC and browsers read strict JSON): non-finite floats become null."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if o is None or isinstance(o, (bool, int, str)):
        return o
    return str(o)


def _dump(path: Path, data: Any, indent: int | None = 1) -> None:
    path.write_text(json.dumps(_clean(data), indent=indent, sort_keys=indent == 2))


def study_dir(root: Path, study: str) -> Path:
    return Path(root) / study


def write_study(root: Path, results: StudyResults, metrics: dict[str, Any], curves: dict[str, dict]) -> Path:
    """runs.json, probes.json, summary.json, metrics.json and plots/ of one study; ``curves``:
    "<workload>__<label>" -> {column: per-epoch means}."""
    out = study_dir(root, results.study)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for old in (out / "plots").glob("*.csv"):  # workloads no longer in the study must not linger
        old.unlink()
    body = asdict(results)
    probes = body.pop("probes")
    _dump(out / "runs.json", body)
    _dump(out / "probes.json", probes)
    _dump(out / "summary.json", metrics, indent=2)
    _dump(out / "metrics.json", headline(metrics), indent=2)
    per_workload: dict[str, list[str]] = {}
    for name, cols in curves.items():
        workload, label = name.split("__", 1)
        lines = per_workload.setdefault(workload, ["epoch,config," + ",".join(CURVE_COLUMNS)])
        n = max((len(v) for v in cols.values()), default=0)
        for e in range(n):
            vals = [cols.get(k, [])[e] if e < len(cols.get(k, [])) else float("nan") for k in CURVE_COLUMNS]
            lines.append(",".join([str(e + 1), label.replace(",", ";")] + [f"{v:.6g}" for v in vals]))
    for workload, lines in per_workload.items():
        (out / "plots" / f"{workload.replace('/', '_')}.csv").write_text("\n".join(lines) + "\n")
    return out


def read_study(root: Path, study: str) -> StudyResults:
    out = study_dir(root, study)
    body = json.loads((out / "runs.json").read_text())
    if body.get("schema") != SCHEMA:
        raise ValueError(f"{out / 'runs.json'}: results schema {body.get('schema')}, expected {SCHEMA}: re-export")
    probes_file = out / "probes.json"
    probes = json.loads(probes_file.read_text()) if probes_file.is_file() else {}
    return StudyResults(**{**body, "probes": probes})


# What metrics.json keeps of summary.json per workload and configuration: the few numbers a change is judged
# by, so `dvc metrics diff` shows the effect of a change in a few lines (timings and the rest: summary.json).
HEADLINE_KEYS = ("n", "diverged", "test_acc_mean", "test_acc_ci95", "val_acc_mean")
HEADLINE_SECTIONS = ("bias_variance",)  # kept whole


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for workload, configs in summary.items():
        if workload in HEADLINE_SECTIONS:
            out[workload] = configs
        elif workload != "probes":
            out[workload] = {c: {k: m[k] for k in HEADLINE_KEYS if k in m} for c, m in configs.items()}
    return out


def read_metrics(root: Path, study: str) -> dict[str, Any]:
    """The study's full summary (summary.json; metrics.json for results written before it existed)."""
    for name in ("summary.json", "metrics.json"):
        path = study_dir(root, study) / name
        if path.is_file():
            return json.loads(path.read_text())
    return {}


def write_tuning(root: Path, study: str, summary: dict[str, Any], trials: dict[str, Any] | None = None) -> Path:
    """tuning.json (per technique: each budget's choice and its re-runs) and trials.json (every Optuna trial with
    its state, score, parameters and MLflow run ids: a DVC-cached output, so a clone without optuna.db has no
    trials.json either and `dvc repro` runs the tuning stage)."""
    out = study_dir(root, study)
    out.mkdir(parents=True, exist_ok=True)
    _dump(out / "tuning.json", summary)
    _dump(out / "trials.json", trials or {})
    _dump(out / "tuning_metrics.json", tuning_headline(summary), indent=2)
    return out / "tuning.json"


def tuning_headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The DVC metrics of a tuning stage: per technique and budget, the chosen trial's validation score and the
    mean test accuracy of its re-runs over the evaluation seeds."""
    out: dict[str, Any] = {}
    for technique, info in summary.items():
        for budget, got in (info.get("budgets") or {}).items():
            accs = [r["test_acc"] for r in got.get("runs") or [] if r.get("test_acc") is not None]
            out.setdefault(technique, {})[budget] = {
                "best_val_acc": got.get("best_val_acc"),
                "test_acc_mean": round(sum(accs) / len(accs), 6) if accs else None,
                "n": len(accs),
            }
    return out


def read_tuning(root: Path, study: str) -> dict[str, Any]:
    path = study_dir(root, study) / "tuning.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def studies(root: Path) -> list[str]:
    return sorted(p.parent.name for p in Path(root).glob("*/runs.json"))
