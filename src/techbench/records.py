"""The record every run ends as: what trained (the requested and the effective configuration), with which seed,
what it measured (final metrics and per-step histories), what it kept (artifacts) and how it ended. Training
runs, tuning trials and probes all end as one RunRecord; tracking.py writes it in one call (MLflow params,
metrics, histories, artifacts and the record itself as ``record.json``, the ``complete`` tag last) and reads it
back for the results. Torch-free: results, analysis and report read records as data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("run", "trial", "probe")
OUTCOMES = ("completed", "diverged", "pruned")


@dataclass
class RunRecord:
    study: str
    name: str  # the MLflow run name, e.g. "adam/mnist1d_mlp/seed0"
    kind: str  # "run", "trial" or "probe"
    seed: int
    tags: dict[str, str]  # identity (study, family, technique, variant, workload, config_hash, ...) and context
    config: dict[str, Any]  # the effective configuration as nested data (a probe: its hyperparameters)
    metrics: dict[str, float] = field(default_factory=dict)  # final values
    histories: dict[str, list[float]] = field(default_factory=dict)  # step = list index (epoch, solution, n)
    artifacts: dict[str, Any] = field(default_factory=dict)  # path -> bytes, str, or JSON-able data
    payload: dict[str, Any] = field(default_factory=dict)  # a probe's full result (rows, curves, notes)
    requested: dict[str, Any] = field(default_factory=dict)  # the configuration as params.yaml asked for it
    outcome: str = "completed"
    parent_run_id: str | None = None
    run_id: str | None = None  # set once written

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"record kind {self.kind!r}; allowed: {', '.join(KINDS)}")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"record outcome {self.outcome!r}; allowed: {', '.join(OUTCOMES)}")

    @property
    def config_hash(self) -> str:
        return self.tags["config_hash"]

    def as_json(self) -> dict[str, Any]:
        """The record as stored in ``record.json`` (artifacts are stored beside it, not inside)."""
        out = asdict(self)
        out.pop("artifacts")
        out["artifact_paths"] = sorted(self.artifacts)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], run_id: str | None = None) -> RunRecord:
        data = {**data, "requested": data.get("requested", {})}
        data["artifacts"] = dict.fromkeys(data.pop("artifact_paths", []))  # stored beside the record
        data["histories"] = {
            k: [float("nan") if v is None else v for v in vals] for k, vals in data["histories"].items()
        }
        data["metrics"] = {k: float("nan") if v is None else v for k, v in data["metrics"].items()}
        return cls(**{**data, "run_id": run_id or data.get("run_id")})


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optimizer": {"lr": 0.1}} -> {"optimizer.lr": 0.1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
