"""params.yaml -> validated, frozen run specs. The only module that knows the file's shape.

Layout of params.yaml:
  hardware:          Lightning Trainer settings shared by every run (accelerator, devices, strategy, precision)
  studies.<name>:    one study = one technique family x its techniques x seeds on one workload
  tuning.<name>:     optional Optuna budget for techniques of study <name>

A component (data, model, optimizer, ...) is written as ``{name: <registry key>, <hyperparameter>: value}``;
the registry entry's defaults define which hyperparameters exist, so a typo is an unknown key.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from techbench.errors import ConfigError
from techbench.registry import Registry

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
    "grad_clip": 0.0,  # 0 = no clipping
    # A training loss above this (or NaN/inf) marks the run as diverged; it stops and is recorded.
    "divergence_loss": 1.0e3,
    "target_val_acc": 0.0,  # time-to-target is reported when > 0
}
STUDY_KEYS = ["family", "techniques", "seeds", "data", "model", "train", "base", "technique_params"]
TUNING_DEFAULTS: dict[str, Any] = {
    "techniques": [],
    "trials": 10,
    "sampler_seed": 0,
    "seed": 1000,
    "eval_seeds": 0,
}

# Bounds for hyperparameters that mean the same thing in every registry entry that declares them.
# (low, high, low_inclusive, high_inclusive); None = unbounded.
HP_BOUNDS: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "lr": (0.0, None, False, True),
    "momentum": (0.0, 1.0, True, False),
    "beta": (0.0, 1.0, True, False),
    "beta1": (0.0, 1.0, True, False),
    "beta2": (0.0, 1.0, True, False),
    "alpha": (0.0, 1.0, True, True),
    "eps": (0.0, None, False, True),
    "weight_decay": (0.0, None, True, True),
    "dropout": (0.0, 1.0, True, False),
    "epochs": (1, None, True, True),
    "batch_size": (1, None, True, True),
    "grad_clip": (0.0, None, True, True),
    "divergence_loss": (0.0, None, False, True),
    "target_val_acc": (0.0, 1.0, True, True),
    "num_samples": (10, None, True, True),
    "val_fraction": (0.0, 1.0, False, False),
}


def _check_value(key: str, name: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true/false, got {value!r}")
        return value
    if isinstance(default, (int, float)) and default is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {value!r}")
        if isinstance(default, int) and not isinstance(default, bool) and not float(value).is_integer():
            raise ConfigError(key, f"expected an integer, got {value!r}")
        if not math.isfinite(float(value)):
            raise ConfigError(key, f"expected a finite number, got {value!r}")
        if name in HP_BOUNDS:
            lo, hi, lo_inc, hi_inc = HP_BOUNDS[name]
            if lo is not None and (value < lo or (value == lo and not lo_inc)):
                raise ConfigError(key, f"{value!r} is out of range: must be {'>=' if lo_inc else '>'} {lo}")
            if hi is not None and (value > hi or (value == hi and not hi_inc)):
                raise ConfigError(key, f"{value!r} is out of range: must be {'<=' if hi_inc else '<'} {hi}")
        return int(value) if isinstance(default, int) else float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {value!r}")
    if isinstance(default, (list, tuple)) and not isinstance(value, (list, tuple)):
        raise ConfigError(key, f"expected a list, got {value!r}")
    return value


def merge_checked(key: str, defaults: dict[str, Any], given: dict[str, Any] | None) -> dict[str, Any]:
    """defaults updated with ``given``; unknown keys and out-of-range values raise ConfigError."""
    given = given or {}
    if not isinstance(given, dict):
        raise ConfigError(key, f"expected a mapping, got {given!r}")
    out = dict(defaults)
    for name, value in given.items():
        if name not in defaults:
            raise ConfigError(f"{key}.{name}", "unknown key", sorted(defaults))
        out[name] = _check_value(f"{key}.{name}", name, value, defaults[name])
    return out


def component(key: str, registry: Registry, given: Any) -> dict[str, Any]:
    """Resolve ``{name: k, **hp}`` (or just ``k``) against a registry into a full, checked dict."""
    if isinstance(given, str):
        given = {"name": given}
    if not isinstance(given, dict) or "name" not in given:
        raise ConfigError(key, f"expected {{name: <{registry.family} key>, ...}}", registry.names())
    name = given["name"]
    if name not in registry:
        raise ConfigError(f"{key}.name", f"unknown {registry.family} {name!r}", registry.names())
    hp = {k: v for k, v in given.items() if k != "name"}
    entry = registry.get(name)
    resolved = merge_checked(key, entry.defaults, hp)
    check = entry.meta.get("check")
    if check is not None:
        try:
            check(resolved)
        except ValueError as e:
            raise ConfigError(key, str(e)) from None
    return {"name": name, **resolved}


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run's numbers except the seed."""

    study: str
    family: str
    technique: str
    data: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]
    components: dict[str, dict[str, Any]]  # slot -> component, e.g. {"optimizer": {...}}
    hardware: dict[str, Any]
    variant: str = "default"  # "default" or e.g. "tuned"

    def as_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "family": self.family,
            "technique": self.technique,
            "variant": self.variant,
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
class StudySpec:
    name: str
    family: str
    techniques: list[str]
    seeds: int
    runs: dict[str, RunConfig]  # technique -> its run config


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


def _study(name: str, block: Any, hardware: dict[str, Any]) -> StudySpec:
    from techbench.techniques import FAMILIES
    from techbench.workloads import DATASETS, MODELS

    key = f"studies.{name}"
    if not isinstance(block, dict):
        raise ConfigError(key, "expected a mapping")
    for k in block:
        if k not in STUDY_KEYS:
            raise ConfigError(f"{key}.{k}", "unknown key", STUDY_KEYS)
    for required in ("family", "techniques", "seeds", "data", "model"):
        if required not in block:
            raise ConfigError(f"{key}.{required}", "missing required key")
    family_name = block["family"]
    if family_name not in FAMILIES:
        raise ConfigError(f"{key}.family", f"unknown family {family_name!r}", sorted(FAMILIES))
    family = FAMILIES[family_name]
    techniques = block["techniques"]
    if not isinstance(techniques, list) or not techniques:
        raise ConfigError(f"{key}.techniques", "expected a non-empty list", family.registry.names())
    for i, t in enumerate(techniques):
        if t not in family.registry:
            raise ConfigError(f"{key}.techniques[{i}]", f"unknown technique {t!r}", family.registry.names())
    if len(set(techniques)) != len(techniques):
        raise ConfigError(f"{key}.techniques", "lists a technique twice")
    seeds = block["seeds"]
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"{key}.seeds", f"{seeds!r} is out of range: must be an integer >= 1")

    data = component(f"{key}.data", DATASETS, block["data"])
    model = component(f"{key}.model", MODELS, block["model"])
    train = merge_checked(f"{key}.train", TRAIN_DEFAULTS, block.get("train"))
    # Fixed components for the slots this study does not vary (e.g. the optimizer of a schedule study).
    base = block.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError(f"{key}.base", "expected a mapping of slot -> component")
    slots = {f.slot: f for f in FAMILIES.values()}
    for slot in base:
        if slot not in slots:
            raise ConfigError(f"{key}.base.{slot}", "unknown slot", sorted(slots))
    overrides = block.get("technique_params") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{key}.technique_params", "expected a mapping of technique -> hyperparameters")
    for t in overrides:
        if t not in techniques:
            raise ConfigError(f"{key}.technique_params.{t}", "not a technique of this study", techniques)

    fixed = {
        slot: component(f"{key}.base.{slot}", fam.registry, base.get(slot, fam.default))
        for slot, fam in slots.items()
        if slot != family.slot
    }
    runs = {}
    for t in techniques:
        tech = component(f"{key}.technique_params.{t}", family.registry, {"name": t, **overrides.get(t, {})})
        runs[t] = RunConfig(
            study=name,
            family=family_name,
            technique=t,
            data=data,
            model=model,
            train=train,
            components={**fixed, family.slot: tech},
            hardware=hardware,
        )
    return StudySpec(name=name, family=family_name, techniques=list(techniques), seeds=seeds, runs=runs)


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
    studies = {n: _study(n, b, hardware) for n, b in raw["studies"].items()}
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
