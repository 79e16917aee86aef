"""params.yaml -> validated, frozen run specs. The only module that knows the file's shape.

Layout of params.yaml:
  hardware:          Lightning Trainer settings shared by every run (accelerator, devices, strategy, precision)
  studies.<name>:    one study = one technique family x its techniques x workloads x seeds (+ sweeps, probes)
  tuning.<name>:     optional Optuna budget for techniques of study <name>

A component (data, model, optimizer, ...) is written as ``{name: <registry key>, <hyperparameter>: value}``;
the registry entry's defaults define which hyperparameters exist, so a typo is an unknown key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from techbench.checks import HP_BOUNDS, component, merge_checked  # noqa: F401  (re-exported)
from techbench.errors import ConfigError

HARDWARE_DEFAULTS: dict[str, Any] = {
    "accelerator": "cpu",
    "devices": 1,
    "num_nodes": 1,
    "strategy": "auto",
    "precision": "32-true",
    "deterministic": True,
}
HARDWARE_ALLOWED = {
    "accelerator": ["auto", "cpu", "gpu", "cuda", "mps"],
    "strategy": ["auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "fsdp"],
    "precision": ["32-true", "16-mixed", "bf16-mixed", "bf16-true", "64-true"],
}
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 20,
    "batch_size": 128,
    "accumulate_grad_batches": 1,
    "grad_clip": 0.0,  # 0 = no clipping
    # A training loss above this (or NaN/inf) marks the run as diverged; it stops and is recorded.
    "divergence_loss": 1.0e3,
    "target_val_acc": 0.0,  # time-to-target is reported when > 0
    "save_predictions": False,  # log test-set probabilities (an artifact) for bias²/variance over seeds
}
TUNING_DEFAULTS: dict[str, Any] = {
    "techniques": [],
    "trials": 10,
    "sampler_seed": 0,
    "seed": 1000,
    "eval_seeds": 0,
}


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run's numbers except the seed."""

    study: str
    family: str
    technique: str
    data: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]
    components: dict[str, dict[str, Any]]  # slot -> component, e.g. {"optimizer": {...}, "schedule": {...}}
    hardware: dict[str, Any]
    variant: str = "default"  # "default", "tuned", or a sweep point such as "lr=0.01"
    workload: str = "default"

    @property
    def label(self) -> str:
        return self.technique if self.variant == "default" else f"{self.technique}@{self.variant}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "family": self.family,
            "technique": self.technique,
            "variant": self.variant,
            "workload": self.workload,
            "data": self.data,
            "model": self.model,
            "train": self.train,
            **self.components,
            "hardware": self.hardware,
        }

    def config_hash(self) -> str:
        """Identity of the run's configuration and of the code that runs it (seed excluded)."""
        from techbench import code_version

        blob = json.dumps({"config": self.as_dict(), "code": code_version()}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def with_technique_params(self, hp: dict[str, Any], variant: str) -> RunConfig:
        slot = slot_of(self.family)
        comps = dict(self.components)
        comps[slot] = {**comps[slot], **hp}
        return replace(self, components=comps, variant=variant)


@dataclass(frozen=True)
class Workload:
    name: str
    data: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]


@dataclass(frozen=True)
class StudySpec:
    name: str
    family: str | None  # None for a study made only of probes
    techniques: list[str]
    seeds: int
    runs: list[RunConfig]  # technique x sweep point x workload, in params order
    workloads: dict[str, Workload] = field(default_factory=dict)
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)  # probe -> resolved hyperparameters
    fixed: dict[str, dict[str, Any]] = field(default_factory=dict)  # the components of slots not varied
    execution: str = "sequential"  # or "vectorized": the seeds of a config trained as one stack

    def run(self, technique: str, workload: str | None = None) -> RunConfig:
        """The default (unswept) config of a technique on a workload (default: its first workload)."""
        for r in self.runs:
            default = r.variant == "default" or not any(x.variant == "default" for x in self.runs)
            if r.technique == technique and (workload is None or r.workload == workload) and default:
                return r
        raise ConfigError(f"studies.{self.name}.techniques", f"no run of {technique!r}", self.techniques)


@dataclass(frozen=True)
class TuningSpec:
    study: str
    techniques: list[str]
    trials: int
    sampler_seed: int
    seed: int  # the training seed every trial uses
    eval_seeds: int  # the tuned config is re-run over this many seeds (0 = the study's seeds)


@dataclass(frozen=True)
class Params:
    hardware: dict[str, Any]
    studies: dict[str, StudySpec]
    tuning: dict[str, TuningSpec] = field(default_factory=dict)

    def study(self, name: str) -> StudySpec:
        if name not in self.studies:
            raise ConfigError("study", f"unknown study {name!r}", sorted(self.studies))
        return self.studies[name]


def slot_of(family: str) -> str:
    from techbench.techniques import FAMILIES

    return FAMILIES[family].slot


def _hardware(given: Any) -> dict[str, Any]:
    hw = merge_checked("hardware", HARDWARE_DEFAULTS, given)
    for name, allowed in HARDWARE_ALLOWED.items():
        if hw[name] not in allowed:
            raise ConfigError(f"hardware.{name}", f"unknown value {hw[name]!r}", allowed)
    if not (hw["devices"] == -1 or hw["devices"] >= 1):
        raise ConfigError("hardware.devices", f"{hw['devices']!r} is out of range: must be >= 1 or -1 (all)")
    return hw


def _tuning(name: str, block: Any, studies: dict[str, StudySpec]) -> TuningSpec:
    key = f"tuning.{name}"
    if name not in studies:
        raise ConfigError(key, f"no study named {name!r}", sorted(studies))
    t = merge_checked(key, TUNING_DEFAULTS, block)
    for i, tech in enumerate(t["techniques"]):
        if tech not in studies[name].techniques:
            raise ConfigError(
                f"{key}.techniques[{i}]",
                f"{tech!r} is not a technique of study {name}",
                studies[name].techniques,
            )
    if t["trials"] < 1:
        raise ConfigError(f"{key}.trials", f"{t['trials']!r} is out of range: must be >= 1")
    return TuningSpec(study=name, **t)


def parse_params(raw: Any) -> Params:
    if not isinstance(raw, dict):
        raise ConfigError("params", "expected a mapping at the top level")
    top = ["hardware", "studies", "tuning"]
    for k in raw:
        if k not in top:
            raise ConfigError(k, "unknown top-level key", top)
    if not isinstance(raw.get("studies"), dict) or not raw["studies"]:
        raise ConfigError("studies", "expected at least one study block")
    hardware = _hardware(raw.get("hardware"))
    from techbench.config_study import parse_study

    studies = {n: parse_study(n, b, hardware) for n, b in raw["studies"].items()}
    tuning_raw = raw.get("tuning") or {}
    if not isinstance(tuning_raw, dict):
        raise ConfigError("tuning", "expected a mapping of study -> tuning budget")
    tuning = {n: _tuning(n, b, studies) for n, b in tuning_raw.items()}
    return Params(hardware=hardware, studies=studies, tuning=tuning)


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("params", f"file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(str(path), f"not valid YAML: {e}") from None
    return parse_params(raw)
