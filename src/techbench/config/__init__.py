"""params.yaml -> validated, frozen specs (techbench/specs.py). The only package that knows the file's shape.

Layout of params.yaml:
  paths:             where results, reports and benchmark measurements go (dvc.yaml reads the same block)
  hardware:          Lightning Trainer settings shared by every run (accelerator, devices, strategy, precision)
  studies.<name>:    one study = one technique family x its techniques x workloads x seeds (+ sweeps, probes)
  tuning.<name>:     optional Optuna budget for techniques of study <name>
  pretrain.<name>:   a source model the pretrain stage trains and saves (config/transfer.py)
  transfer.<name>:   a study that starts from a source (`source: <pretrain name>`; config/transfer.py)

A component (data, model, optimizer, ...) is written as ``{name: <registry key>, <hyperparameter>: value}``;
the registry entry's defaults define which hyperparameters exist, so a typo is an unknown key. An overlay
(configs/full.yaml) holds only what differs from params.yaml and is merged over it (config/overlay.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from techbench.checks import component, merge_checked
from techbench.config.overlay import merge
from techbench.config.study import parse_study
from techbench.config.transfer import parse_source, parse_transfer
from techbench.errors import ConfigError
from techbench.paths import PATHS_DEFAULTS, parse_paths
from techbench.specs import (
    HARDWARE_DEFAULTS,
    TRAIN_DEFAULTS,
    EffectiveRun,
    Params,
    RunConfig,
    StudySpec,
    TuningSpec,
    Workload,
)
from techbench.techniques import FAMILIES

HARDWARE_ALLOWED = {
    "accelerator": ["auto", "cpu", "gpu", "cuda", "mps"],
    "strategy": ["auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "fsdp"],
    "precision": ["32-true", "16-mixed", "bf16-mixed", "bf16-true", "64-true"],
}
TUNING_DEFAULTS: dict[str, Any] = {
    "techniques": [],
    "trials": 10,
    "sampler_seed": 0,
    "seed": 1000,
    "eval_seeds": 0,
    "stack": 1,  # trials trained together as one stack (1: one trial at a time)
    "trial_seeds": 1,  # seeds each trial trains (seed, seed+1, ...); its score is their mean validation accuracy
    "sampler": "tpe",
    # Named tuning budgets (trial counts), each re-run on the evaluation seeds: {small: 8, large: 32}. The
    # budgets are nested prefixes of one Optuna study of max(budgets) trials (a sampler's and the pruner's
    # first n trials do not depend on the later ones), so the large budget costs its trials once. Empty: one
    # budget "tuned" of `trials` trials.
    "budgets": {},
    # Seconds between a running trial's heartbeats in the Optuna storage; a trial silent for three of them
    # (its worker was killed) is failed and re-queued with the same hyperparameters by the next worker.
    "heartbeat": 10,
}
RESERVED_BUDGETS = ["default", "one_shot"]
SAMPLERS = ["tpe", "random", "qmc"]
TOP_LEVEL = ["paths", "hardware", "studies", "tuning", "pretrain", "transfer"]


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
    for field in ("trials", "stack", "trial_seeds", "heartbeat"):
        if not isinstance(t[field], int) or t[field] < 1:
            raise ConfigError(f"{key}.{field}", f"{t[field]!r} is out of range: must be an integer >= 1")
    t["budgets"] = _budgets(key, t["budgets"], t["trials"], block)
    t["trials"] = max(t["budgets"].values())
    if t["sampler"] not in SAMPLERS:
        raise ConfigError(f"{key}.sampler", f"unknown sampler {t['sampler']!r}", SAMPLERS)
    for i, tech in enumerate(t["techniques"]):
        check_tunable(f"{key}.techniques[{i}]", studies[name], tech)
    return TuningSpec(study=name, **t)


def _budgets(key: str, given: Any, trials: int, block: Any) -> dict[str, int]:
    if not given:
        return {"tuned": trials}
    if not isinstance(given, dict):
        raise ConfigError(f"{key}.budgets", "expected a mapping of budget name -> trials, e.g. {small: 8, large: 32}")
    for name, n in given.items():
        if name in RESERVED_BUDGETS or not str(name).isidentifier():
            raise ConfigError(
                f"{key}.budgets.{name}", "not a usable budget name (an identifier, not reserved)", RESERVED_BUDGETS
            )
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"{key}.budgets.{name}", f"{n!r} is out of range: must be an integer >= 1")
    if "trials" in (block or {}):
        raise ConfigError(f"{key}.trials", "give either trials or budgets (the largest budget is the trial count)")
    return dict(sorted(given.items(), key=lambda kv: kv[1]))


def check_tunable(key: str, spec: StudySpec, technique: str) -> None:
    """ConfigError unless the study's ``technique`` declares a search space (Optuna would have nothing to try)."""
    registry = FAMILIES[spec.family].registry
    if not registry.get(technique).search_space:
        tunable = [e.name for e in registry if e.search_space and e.name in spec.techniques]
        raise ConfigError(key, f"{technique!r} declares no search space", tunable)


def parse_params(raw: Any) -> Params:
    if not isinstance(raw, dict):
        raise ConfigError("params", "expected a mapping at the top level")
    for k in raw:
        if k not in TOP_LEVEL:
            raise ConfigError(k, "unknown top-level key", TOP_LEVEL)
    if not isinstance(raw.get("studies"), dict) or not raw["studies"]:
        raise ConfigError("studies", "expected at least one study block")
    hardware = _hardware(raw.get("hardware"))
    paths = parse_paths(raw.get("paths"))
    studies = {n: parse_study(n, b, hardware) for n, b in raw["studies"].items()}
    sources = {
        n: parse_source(n, b, hardware, paths["models"]) for n, b in _block(raw, "pretrain", "source models").items()
    }
    for n, b in _block(raw, "transfer", "transfer studies").items():
        if n in studies:
            raise ConfigError(f"transfer.{n}", "a study of this name is in `studies:` already", sorted(studies))
        studies[n] = parse_transfer(n, b, hardware, sources)
    tuning_raw = raw.get("tuning") or {}
    if not isinstance(tuning_raw, dict):
        raise ConfigError("tuning", "expected a mapping of study -> tuning budget")
    tuning = {n: _tuning(n, b, studies) for n, b in tuning_raw.items()}
    return Params(hardware=hardware, studies=studies, tuning=tuning, paths=paths, pretrain=sources)


def _block(raw: dict, name: str, what: str) -> dict:
    block = raw.get(name) or {}
    if not isinstance(block, dict):
        raise ConfigError(name, f"expected a mapping of name -> {what}")
    return block


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("file", "not found", source=str(path))
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(where, f"not valid YAML: {problem}", source=str(path)) from None


def load_params(path: str | Path = "params.yaml", overlays: list[str | Path] = ()) -> Params:
    """params.yaml, with each overlay file merged over it in turn, validated."""
    raw = read_yaml(path)
    for overlay in overlays:
        raw = merge(raw, read_yaml(overlay), str(overlay))
    return parse_params(raw)


__all__ = [
    "HARDWARE_DEFAULTS",
    "PATHS_DEFAULTS",
    "TRAIN_DEFAULTS",
    "EffectiveRun",
    "Params",
    "RunConfig",
    "StudySpec",
    "TuningSpec",
    "Workload",
    "check_tunable",
    "component",
    "load_params",
    "merge",
    "merge_checked",
    "parse_params",
    "read_yaml",
]
