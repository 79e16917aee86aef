"""One ``studies.<name>`` block of params.yaml -> a StudySpec: its probes, family and techniques, workloads,
fixed components, sweep points and the RunConfig of every technique x sweep point x workload."""

from __future__ import annotations

from typing import Any

from techbench.checks import component, merge_checked
from techbench.config.sweeps import applicable, apply_point, check_slot_axes, parse_axes, points
from techbench.errors import ConfigError
from techbench.probes import PROBES
from techbench.specs import TRAIN_DEFAULTS, RunConfig, StudySpec, Workload
from techbench.techniques import FAMILIES
from techbench.workloads import DATASETS, MODELS

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
    "baseline",
]
EXECUTION = ["sequential", "vectorized"]
WORKLOAD_KEYS = ["data", "model", "train", "techniques", "sweep", "baseline"]


def _mapping(key: str, value: Any, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a mapping of {what}")
    return value


def _train(key: str, defaults: dict[str, Any], given: Any) -> dict[str, Any]:
    train = merge_checked(key, defaults, given)
    if train["epochs"] < 1:
        raise ConfigError(f"{key}.epochs", f"{train['epochs']!r} is out of range: must be >= 1")
    sizes = train["memory_batches"]
    if not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in sizes):
        raise ConfigError(f"{key}.memory_batches", f"{sizes!r}: expected a list of batch sizes (integers >= 1)")
    return train


def _workload(key: str, name: str, w: dict, block: dict, techniques: list[str], train_default: dict):
    for k in w:
        if k not in WORKLOAD_KEYS:
            raise ConfigError(f"{key}.{k}", "unknown key", WORKLOAD_KEYS)
    for required in ("data", "model"):
        if required not in w and required not in block:
            raise ConfigError(f"{key}.{required}", "missing required key (or give `workloads:`)")
    data = component(f"{key}.data", DATASETS, w.get("data", block.get("data")))
    model = component(f"{key}.model", MODELS, w.get("model", block.get("model")))
    train = _train(f"{key}.train", train_default, w.get("train"))
    own = w.get("techniques", techniques)
    if not isinstance(own, list):
        raise ConfigError(f"{key}.techniques", "expected a list", techniques)
    for i, t in enumerate(own):
        if t not in techniques:
            raise ConfigError(f"{key}.techniques[{i}]", f"{t!r} is not a technique of this study", techniques)
    return Workload(name or f"{data['name']}_{model['name']}", data, model, train), list(own), w.get("sweep")


def _workloads(key: str, block: dict, techniques: list[str]) -> list[tuple[Workload, list[str], Any]]:
    """(workload, its techniques, its own sweep) per workload; top-level data/model/train are their defaults."""
    given = _mapping(f"{key}.workloads", block.get("workloads"), "workload name -> {data, model, train}")
    if not given:
        train = merge_checked(f"{key}.train", TRAIN_DEFAULTS, block.get("train"))
        return [_workload(key, "", {}, block, techniques, train)]
    train_default = merge_checked(f"{key}.train", TRAIN_DEFAULTS, block.get("train"))
    out = []
    for name, w in given.items():
        wkey = f"{key}.workloads.{name}"
        out.append(
            _workload(wkey, name, _mapping(wkey, w, "data, model, train, techniques"), block, techniques, train_default)
        )
    return out


def _seeds(key: str, block: dict) -> int:
    if "seeds" not in block:
        raise ConfigError(f"{key}.seeds", "missing required key")
    seeds = block["seeds"]
    if isinstance(seeds, bool) or not isinstance(seeds, int):
        raise ConfigError(f"{key}.seeds", f"expected an integer (the number of paired seeds), got {seeds!r}")
    if seeds < 1:
        raise ConfigError(f"{key}.seeds", f"{seeds!r} is out of range: must be >= 1")
    return seeds


def _probes(key: str, block: dict) -> dict[str, dict[str, Any]]:
    raw = block.get("probes") or {}
    if isinstance(raw, list):
        raw = {p: {} for p in raw}
    raw = _mapping(f"{key}.probes", raw, "probe -> hyperparameters")
    for p in raw:
        if p not in PROBES:
            raise ConfigError(f"{key}.probes.{p}", f"unknown probe {p!r}", PROBES.names())
    return {p: component(f"{key}.probes.{p}", PROBES, {"name": p, **(hp or {})}) for p, hp in raw.items()}


def _family(key: str, block: dict, has_probes: bool):
    name = block.get("family")
    if name is None:
        if not has_probes:
            raise ConfigError(f"{key}.family", "missing required key (a study without a family lists probes)")
        if "techniques" in block:
            raise ConfigError(f"{key}.techniques", "techniques need a family", FAMILIES.names())
        return None, []
    if name not in FAMILIES:
        raise ConfigError(f"{key}.family", f"unknown family {name!r}", FAMILIES.names())
    family = FAMILIES[name]
    techniques = block.get("techniques")
    if not isinstance(techniques, list) or not techniques:
        raise ConfigError(f"{key}.techniques", "expected a non-empty list", family.registry.names())
    for i, t in enumerate(techniques):
        if t not in family.registry:
            raise ConfigError(f"{key}.techniques[{i}]", f"unknown technique {t!r}", family.registry.names())
    if len(set(techniques)) != len(techniques):
        raise ConfigError(f"{key}.techniques", "lists a technique twice")
    return family, list(techniques)


def _fixed(key: str, block: dict, family) -> dict[str, dict[str, Any]]:
    """The components of every slot the study does not vary: `base:` or the family's default."""
    base = _mapping(f"{key}.base", block.get("base"), "slot -> component")
    slots = FAMILIES.names()
    for slot in base:
        if slot not in FAMILIES:
            raise ConfigError(f"{key}.base.{slot}", "unknown slot", slots)
        if family is not None and slot == family.name:
            raise ConfigError(
                f"{key}.base.{slot}",
                f"this study varies the {slot}; set its hyperparameters in technique_params",
                [s for s in slots if s != slot],
            )
    fixed = {
        f.name: component(f"{key}.base.{f.name}", f.registry, base.get(f.name, f.default))
        for f in FAMILIES
        if family is None or f.name != family.name
    }
    for f in FAMILIES:
        # A procedure runs only in a study of its own family: elsewhere its slot would claim what never ran.
        if f.procedure and f.name in fixed and fixed[f.name]["name"] != f.default["name"]:
            raise ConfigError(
                f"{key}.base.{f.name}",
                f"a {f.name} procedure runs only in a study with family {f.name}",
                [f.default["name"]],
            )
    return fixed


def _techniques(key: str, block: dict, family, techniques: list[str]) -> list[dict[str, Any]]:
    overrides = _mapping(f"{key}.technique_params", block.get("technique_params"), "technique -> hyperparameters")
    for t in overrides:
        if t not in techniques:
            raise ConfigError(f"{key}.technique_params.{t}", "not a technique of this study", techniques)
    return [
        component(f"{key}.technique_params.{t}", family.registry, {"name": t, **overrides.get(t, {})})
        for t in techniques
    ]


def _runs(name, key, family, techs, workloads, fixed, axes, hardware) -> list[RunConfig]:
    registries = {**{f.name: f.registry for f in FAMILIES}, "data": DATASETS, "model": MODELS, "train": None}
    runs = []
    for tech in techs:
        for workload, own, _ in workloads:
            if tech["name"] not in own:
                continue
            for point in points(applicable(axes, tech, workload.name)):
                parts = {"data": workload.data, "model": workload.model, "train": workload.train, **fixed}
                parts[family.name] = tech
                parts = apply_point(key, parts, point, registries)
                sections = {s: parts.pop(s) for s in ("data", "model", "train")}
                runs.append(
                    RunConfig(
                        study=name,
                        family=family.name,
                        technique=tech["name"],
                        **sections,
                        components=parts,
                        hardware=hardware,
                        variant=point.label,
                        workload=workload.name,
                        sweep=point.values,
                    )
                )
    return runs


def parse_study(name: str, block: Any, hardware: dict[str, Any], section: str = "studies") -> StudySpec:
    key = f"{section}.{name}"
    if not isinstance(block, dict):
        raise ConfigError(key, "expected a mapping")
    for k in block:
        if k not in STUDY_KEYS:
            raise ConfigError(f"{key}.{k}", "unknown key", STUDY_KEYS)
    seeds = _seeds(key, block)
    probes = _probes(key, block)
    family, techniques = _family(key, block, bool(probes))
    workloads = _workloads(key, block, techniques)
    fixed = _fixed(key, block, family)
    sections = sorted(set(FAMILIES.names()) | {"train", "model", "data"})
    axes = parse_axes(f"{key}.sweep", block.get("sweep"), sections, family, techniques)
    for workload, _, own_sweep in workloads:
        wkey = f"{key}.workloads.{workload.name}.sweep"
        axes += parse_axes(wkey, own_sweep, sections, family, techniques, workload=workload.name)
    runs = []
    if family is not None:
        techs = _techniques(key, block, family, techniques)
        check_slot_axes(f"{key}.sweep", axes, techs)
        runs = _runs(name, key, family, techs, workloads, fixed, axes, hardware)
        ran = {r.technique for r in runs}
        for i, t in enumerate(techniques):
            if t not in ran:
                raise ConfigError(
                    f"{key}.techniques[{i}]",
                    f"{t!r} runs on no workload: list it in a workload's `techniques:`",
                    [w.name for w, _, _ in workloads],
                )
    baselines = _baselines(key, block, family, runs)
    execution = block.get("execution", "sequential")
    if execution not in EXECUTION:
        raise ConfigError(f"{key}.execution", f"unknown execution mode {execution!r}", EXECUTION)
    return StudySpec(
        name=name,
        family=family.name if family else None,
        techniques=techniques,
        seeds=seeds,
        runs=runs,
        workloads={w.name: w for w, _, _ in workloads},
        probes=probes,
        fixed=fixed,
        execution=execution,
        baselines=baselines,
        section=section,
    )


def _baselines(key: str, block: dict, family, runs: list[RunConfig]) -> dict[str, str]:
    """Per workload, the configuration (a technique, or "technique@variant" of a sweep) every other one is tested
    against on test data: the workload's `baseline:`, else the study's, else the family's default technique (its
    unswept run, else its first), else the workload's first configuration."""
    if family is None:
        if "baseline" in block:
            raise ConfigError(f"{key}.baseline", "a study of probes only has no baseline")
        return {}
    workloads = block.get("workloads") or {}
    out = {}
    for w in dict.fromkeys(r.workload for r in runs):
        labels = list(dict.fromkeys(r.label for r in runs if r.workload == w))
        own = (workloads.get(w) or {}).get("baseline") if w in workloads else None
        wkey = f"{key}.workloads.{w}.baseline" if own is not None else f"{key}.baseline"
        given = own if own is not None else block.get("baseline")
        if given is None:
            name = family.default["name"]
            given = name if name in labels else next((lab for lab in labels if lab.startswith(f"{name}@")), labels[0])
        if given not in labels:
            raise ConfigError(wkey, f"{given!r} is not a configuration of workload {w!r}", labels)
        out[w] = given
    return out
