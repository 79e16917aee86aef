"""One ``studies.<name>`` block of params.yaml -> a StudySpec: its workloads, sweep points, probes and the
RunConfig of every technique x sweep point x workload."""

from __future__ import annotations

import itertools
from typing import Any

from techbench.checks import component, merge_checked
from techbench.config import TRAIN_DEFAULTS, RunConfig, StudySpec, Workload
from techbench.errors import ConfigError

STUDY_KEYS = [
    "family",
    "techniques",
    "seeds",
    "data",
    "model",
    "train",
    "workloads",
    "base",
    "technique_params",
    "sweep",
    "probes",
]
WORKLOAD_KEYS = ["data", "model", "train", "techniques"]


def _mapping(key: str, value: Any, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a mapping of {what}")
    return value


def _workloads(key: str, block: dict, techniques: list[str]) -> dict[str, tuple[Workload, list[str]]]:
    """name -> (workload, its techniques). Top-level data/model/train are the defaults of every workload."""
    from techbench.workloads import DATASETS, MODELS

    given = _mapping(f"{key}.workloads", block.get("workloads"), "workload name -> {data, model, train}")
    if not given:
        for required in ("data", "model"):
            if required not in block:
                raise ConfigError(f"{key}.{required}", "missing required key (or give `workloads:`)")
        data = component(f"{key}.data", DATASETS, block["data"])
        model = component(f"{key}.model", MODELS, block["model"])
        name = f"{data['name']}_{model['name']}"
        train = _checked_train(f"{key}.train", merge_checked(f"{key}.train", TRAIN_DEFAULTS, block.get("train")))
        return {name: (Workload(name, data, model, train), list(techniques))}
    train_default = merge_checked(f"{key}.train", TRAIN_DEFAULTS, block.get("train"))
    out = {}
    for name, w in given.items():
        wkey = f"{key}.workloads.{name}"
        w = _mapping(wkey, w, "data, model, train, techniques")
        for k in w:
            if k not in WORKLOAD_KEYS:
                raise ConfigError(f"{wkey}.{k}", "unknown key", WORKLOAD_KEYS)
        for required in ("data", "model"):
            if required not in w and required not in block:
                raise ConfigError(f"{wkey}.{required}", "missing required key")
        data = component(f"{wkey}.data", DATASETS, w.get("data", block.get("data")))
        model = component(f"{wkey}.model", MODELS, w.get("model", block.get("model")))
        train = _checked_train(f"{wkey}.train", merge_checked(f"{wkey}.train", train_default, w.get("train")))
        own = w.get("techniques", techniques)
        if not isinstance(own, list):
            raise ConfigError(f"{wkey}.techniques", "expected a list", techniques)
        for i, t in enumerate(own):
            if t not in techniques:
                raise ConfigError(f"{wkey}.techniques[{i}]", f"{t!r} is not a technique of this study", techniques)
        out[name] = (Workload(name, data, model, train), list(own))
    return out


def _checked_train(key: str, train: dict[str, Any]) -> dict[str, Any]:
    if train["epochs"] < 1:
        raise ConfigError(f"{key}.epochs", f"{train['epochs']!r} is out of range: must be >= 1")
    return train


def _sweep_points(key: str, given: Any, slots: set[str]) -> list[tuple[str, dict[str, dict[str, Any]]]]:
    """``{"optimizer.lr": [..], ...}`` -> [(variant label, {section: {hp: value}})], the cartesian product."""
    given = _mapping(key, given, "'<slot>.<hyperparameter>' -> list of values")
    if not given:
        return [("default", {})]
    axes = []
    sections = sorted(slots | {"train", "model", "data"})
    for path, values in given.items():
        section, _, hp = str(path).partition(".")
        if section not in sections or not hp:
            raise ConfigError(f"{key}.{path}", "expected '<section>.<hyperparameter>'", sections)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{key}.{path}", "expected a non-empty list of values")
        axes.append([(section, hp, v) for v in values])
    points = []
    for combo in itertools.product(*axes):
        label = ",".join(f"{hp}={v:g}" if isinstance(v, float) else f"{hp}={v}" for _, hp, v in combo)
        override: dict[str, dict[str, Any]] = {}
        for section, hp, v in combo:
            override.setdefault(section, {})[hp] = v
        points.append((label, override))
    return points


def _apply(key: str, base: dict[str, Any], override: dict[str, Any], registry=None) -> dict[str, Any]:
    if not override:
        return base
    if registry is None:  # train: plain defaults
        return merge_checked(key, base, override)
    return component(key, registry, {**base, **override})


def parse_study(name: str, block: Any, hardware: dict[str, Any]) -> StudySpec:
    from techbench.probes import PROBES
    from techbench.techniques import FAMILIES
    from techbench.workloads import DATASETS, MODELS

    key = f"studies.{name}"
    if not isinstance(block, dict):
        raise ConfigError(key, "expected a mapping")
    for k in block:
        if k not in STUDY_KEYS:
            raise ConfigError(f"{key}.{k}", "unknown key", STUDY_KEYS)
    if "seeds" not in block:
        raise ConfigError(f"{key}.seeds", "missing required key")
    seeds = block["seeds"]
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"{key}.seeds", f"{seeds!r} is out of range: must be an integer >= 1")
    probes_raw = block.get("probes") or {}
    if isinstance(probes_raw, list):
        probes_raw = {p: {} for p in probes_raw}
    probes_raw = _mapping(f"{key}.probes", probes_raw, "probe -> hyperparameters")
    probes = {}
    for p, hp in probes_raw.items():
        if p not in PROBES:
            raise ConfigError(f"{key}.probes.{p}", f"unknown probe {p!r}", PROBES.names())
        probes[p] = component(f"{key}.probes.{p}", PROBES, {"name": p, **(hp or {})})

    family_name = block.get("family")
    if family_name is None and not probes:
        raise ConfigError(f"{key}.family", "missing required key (a study without a family lists probes)")
    family = None
    techniques: list[str] = []
    if family_name is not None:
        if family_name not in FAMILIES:
            raise ConfigError(f"{key}.family", f"unknown family {family_name!r}", sorted(FAMILIES))
        family = FAMILIES[family_name]
        techniques = block.get("techniques")
        if not isinstance(techniques, list) or not techniques:
            raise ConfigError(f"{key}.techniques", "expected a non-empty list", family.registry.names())
        for i, t in enumerate(techniques):
            if t not in family.registry:
                raise ConfigError(f"{key}.techniques[{i}]", f"unknown technique {t!r}", family.registry.names())
        if len(set(techniques)) != len(techniques):
            raise ConfigError(f"{key}.techniques", "lists a technique twice")
    elif "techniques" in block:
        raise ConfigError(f"{key}.techniques", "techniques need a family", sorted(FAMILIES))

    workloads = _workloads(key, block, techniques)
    slots = {f.slot: f for f in FAMILIES.values()}
    base = _mapping(f"{key}.base", block.get("base"), "slot -> component")
    for slot in base:
        if slot not in slots:
            raise ConfigError(f"{key}.base.{slot}", "unknown slot", sorted(slots))
        if family is not None and slot == family.slot:
            raise ConfigError(
                f"{key}.base.{slot}",
                f"this study varies the {slot}; set its hyperparameters in technique_params",
                sorted(s for s in slots if s != slot),
            )
    overrides = _mapping(f"{key}.technique_params", block.get("technique_params"), "technique -> hyperparameters")
    for t in overrides:
        if t not in techniques:
            raise ConfigError(f"{key}.technique_params.{t}", "not a technique of this study", techniques)
    fixed = {
        slot: component(f"{key}.base.{slot}", fam.registry, base.get(slot, fam.default))
        for slot, fam in slots.items()
        if family is None or slot != family.slot
    }
    points = _sweep_points(f"{key}.sweep", block.get("sweep"), set(slots))
    registries = {**{s: f.registry for s, f in slots.items()}, "data": DATASETS, "model": MODELS, "train": None}

    runs = []
    for t in techniques:
        tech = component(f"{key}.technique_params.{t}", family.registry, {"name": t, **overrides.get(t, {})})
        for variant, override in points:
            for workload, own in workloads.values():
                if t not in own:
                    continue
                parts = {"data": workload.data, "model": workload.model, "train": workload.train}
                parts.update(fixed)
                parts[family.slot] = tech
                for section, hp in override.items():
                    parts[section] = _apply(f"{key}.sweep.{section}", parts[section], hp, registries[section])
                runs.append(
                    RunConfig(
                        study=name,
                        family=family_name,
                        technique=t,
                        data=parts.pop("data"),
                        model=parts.pop("model"),
                        train=parts.pop("train"),
                        components=parts,
                        hardware=hardware,
                        variant=variant,
                        workload=workload.name,
                    )
                )
    return StudySpec(
        name=name,
        family=family_name,
        techniques=list(techniques),
        seeds=seeds,
        runs=runs,
        workloads={n: w for n, (w, _) in workloads.items()},
        probes=probes,
        fixed=fixed,
    )
