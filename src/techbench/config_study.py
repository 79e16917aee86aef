"""One ``studies.<name>`` block of params.yaml -> a StudySpec: its workloads, sweep points, probes and the
RunConfig of every technique x sweep point x workload."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
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
    "execution",
]
EXECUTION = ["sequential", "vectorized"]
WORKLOAD_KEYS = ["data", "model", "train", "techniques", "sweep"]


def _mapping(key: str, value: Any, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a mapping of {what}")
    return value


def _workloads(key: str, block: dict, techniques: list[str]) -> dict[str, tuple[Workload, list[str], Any]]:
    """name -> (workload, its techniques, its own sweep). Top-level data/model/train are every workload's
    defaults."""
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
        return {name: (Workload(name, data, model, train), list(techniques), None)}
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
        out[name] = (Workload(name, data, model, train), list(own), w.get("sweep"))
    return out


def _checked_train(key: str, train: dict[str, Any]) -> dict[str, Any]:
    if train["epochs"] < 1:
        raise ConfigError(f"{key}.epochs", f"{train['epochs']!r} is out of range: must be >= 1")
    return train


@dataclass(frozen=True)
class Axis:
    """One swept hyperparameter: ``<section>.<hp>`` (every run, or for the varied slot every technique that
    has the hyperparameter), ``<technique>.<hp>`` (that technique only), or a workload's own sweep."""

    section: str  # run-config section the values go to (data, model, train, or a slot)
    hp: str
    values: list[Any]
    technique: str | None = None  # only this technique's runs
    slot_hp: bool = False  # the varied slot: only techniques whose component has ``hp``
    workload: str | None = None  # only this workload's runs


def _axes(key: str, given: Any, slots: set[str], family=None, techniques=(), workload=None) -> list[Axis]:
    given = _mapping(key, given, "'<section>.<hyperparameter>' -> list of values")
    sections = sorted(slots | {"train", "model", "data"})
    axes = []
    for path, values in given.items():
        section, _, hp = str(path).partition(".")
        if family is not None and section in family.registry and section not in techniques:
            raise ConfigError(f"{key}.{path}", f"{section!r} is not a technique of this study", list(techniques))
        if not hp or (section not in sections and section not in techniques):
            raise ConfigError(f"{key}.{path}", "expected '<section or technique>.<hyperparameter>'", sections)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{key}.{path}", "expected a non-empty list of values")
        if section in techniques:
            axes.append(Axis(family.slot, hp, values, technique=section, workload=workload))
        else:
            is_slot = family is not None and section == family.slot
            axes.append(Axis(section, hp, values, slot_hp=is_slot, workload=workload))
    return axes


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "x".join(_fmt(x) for x in v)
    return str(v)


def _points(axes: list[Axis]) -> list[tuple[str, dict[str, dict[str, Any]]]]:
    """The cartesian product of ``axes`` -> [(variant label, {section: {hp: value}})]."""
    if not axes:
        return [("default", {})]
    points = []
    for combo in itertools.product(*[[(a, v) for v in a.values] for a in axes]):
        override: dict[str, dict[str, Any]] = {}
        for a, v in combo:
            override.setdefault(a.section, {})[a.hp] = v
        points.append((",".join(f"{a.hp}={_fmt(v)}" for a, v in combo), override))
    return points


def _applicable(axes: list[Axis], technique: dict[str, Any], workload: str) -> list[Axis]:
    return [
        a
        for a in axes
        if (a.technique is None or a.technique == technique["name"])
        and (not a.slot_hp or a.hp in technique)
        and (a.workload is None or a.workload == workload)
    ]


def _sweep_key(key: str, axes: list[Axis], section: str) -> str:
    """Where a swept value came from, as the user wrote it: `<study>[.workloads.<w>].sweep.<section|technique>`."""
    a = next(a for a in axes if a.section == section)
    where = f"{key}.workloads.{a.workload}.sweep" if a.workload else f"{key}.sweep"
    return f"{where}.{a.technique or section}"


def _check_slot_axes(key: str, axes: list[Axis], techs: list[dict[str, Any]]) -> None:
    for a in axes:
        if a.slot_hp and not any(a.hp in t for t in techs):
            allowed = sorted({k for t in techs for k in t if k != "name"})
            raise ConfigError(
                f"{key}.{a.section}.{a.hp}", "no technique of this study has this hyperparameter", allowed
            )


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
    axes = _axes(f"{key}.sweep", block.get("sweep"), set(slots), family, techniques)
    for wname, (_, _, wsweep) in workloads.items():
        axes += _axes(f"{key}.workloads.{wname}.sweep", wsweep, set(slots), family, techniques, workload=wname)
    registries = {**{s: f.registry for s, f in slots.items()}, "data": DATASETS, "model": MODELS, "train": None}

    runs = []
    techs = [
        component(f"{key}.technique_params.{t}", family.registry, {"name": t, **overrides.get(t, {})})
        for t in techniques
    ]
    _check_slot_axes(f"{key}.sweep", axes, techs)
    for t, tech in zip(techniques, techs, strict=True):
        for workload, own, _ in workloads.values():
            if t not in own:
                continue
            applicable = _applicable(axes, tech, workload.name)
            for variant, override in _points(applicable):
                parts = {"data": workload.data, "model": workload.model, "train": workload.train}
                parts.update(fixed)
                parts[family.slot] = tech
                for section, hp in override.items():
                    where = _sweep_key(key, applicable, section)
                    parts[section] = _apply(where, parts[section], hp, registries[section])
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
        workloads={n: w for n, (w, _, _) in workloads.items()},
        probes=probes,
        fixed=fixed,
        execution=_execution(f"{key}.execution", block.get("execution", "sequential")),
    )


def _execution(key: str, value: Any) -> str:
    if value not in EXECUTION:
        raise ConfigError(key, f"unknown execution mode {value!r}", EXECUTION)
    return value
