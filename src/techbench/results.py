"""The only writer and reader of results/<study>/: a study's results as one typed, self-describing object.

  runs.json     StudyResults: the family (its columns, summary metrics and findings hook), each technique's
                description and flags, each configuration as it trained (effective config, hash, seeds),
                and one row per finished run (analysis/rows.py: identity, sweep point as data, metrics, curves)
  probes.json   each probe's settings and per-seed results
  metrics.json  the DVC metrics: per workload and technique the headline means and CIs, plus what the study
                adds (bias² and variance, probe means)
  curves/*.csv  the DVC plots: per-epoch means over seeds of one technique on one workload
  tuning.json   the tuning summary of the study's tuned techniques

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
    """runs.json, probes.json, metrics.json and curves/ of one study; ``curves``: "<workload>__<label>" ->
    {column: per-epoch means}."""
    out = study_dir(root, results.study)
    (out / "curves").mkdir(parents=True, exist_ok=True)
    for old in (out / "curves").glob("*.csv"):  # curves of techniques no longer in the study must not linger
        old.unlink()
    body = asdict(results)
    probes = body.pop("probes")
    _dump(out / "runs.json", body)
    _dump(out / "probes.json", probes)
    _dump(out / "metrics.json", metrics, indent=2)
    for name, cols in curves.items():
        n = max((len(v) for v in cols.values()), default=0)
        lines = ["epoch," + ",".join(CURVE_COLUMNS)]
        for e in range(n):
            vals = [cols.get(k, [])[e] if e < len(cols.get(k, [])) else float("nan") for k in CURVE_COLUMNS]
            lines.append(",".join([str(e + 1)] + [f"{v:.6g}" for v in vals]))
        (out / "curves" / f"{name.replace('/', '_')}.csv").write_text("\n".join(lines) + "\n")
    return out


def read_study(root: Path, study: str) -> StudyResults:
    out = study_dir(root, study)
    body = json.loads((out / "runs.json").read_text())
    if body.get("schema") != SCHEMA:
        raise ValueError(f"{out / 'runs.json'}: results schema {body.get('schema')}, expected {SCHEMA}: re-export")
    probes_file = out / "probes.json"
    probes = json.loads(probes_file.read_text()) if probes_file.is_file() else {}
    return StudyResults(**{**body, "probes": probes})


def read_metrics(root: Path, study: str) -> dict[str, Any]:
    path = study_dir(root, study) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def write_tuning(root: Path, study: str, summary: dict[str, Any]) -> Path:
    out = study_dir(root, study)
    out.mkdir(parents=True, exist_ok=True)
    _dump(out / "tuning.json", summary)
    return out / "tuning.json"


def read_tuning(root: Path, study: str) -> dict[str, Any]:
    path = study_dir(root, study) / "tuning.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def studies(root: Path) -> list[str]:
    return sorted(p.parent.name for p in Path(root).glob("*/runs.json"))
