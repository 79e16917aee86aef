"""The `pretrain:` and `transfer:` blocks of params.yaml.

pretrain.<name>:  a source model: {data, model, train, optimizer, seed}; the pretrain stage trains it once
                  (best validation weights kept) and saves <paths.models>/<name>/model.safetensors + card.json
transfer.<name>:  a study (the keys of a `studies:` block) with `source: <pretrain name>`; its model is the
                  source's, every run starts from the source's weights (the transfer family, the default
                  family here, says how), and its DVC stage depends on exactly that source's folder.
                  With a `model:` of its own the study trains that model, a student, and the source is its
                  teacher (the strategies with a teacher flag: knowledge distillation; scratch as the
                  labels-only baseline)
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from techbench.checks import component
from techbench.config.study import STUDY_KEYS, parse_study
from techbench.errors import ConfigError
from techbench.specs import SourceSpec, StudySpec
from techbench.techniques import FAMILIES, TRANSFER

PRETRAIN_KEYS = ["data", "model", "train", "optimizer", "seed"]
WEIGHTS = "model.safetensors"


def weights_path(models: str, name: str) -> str:
    return str(Path(models) / name / WEIGHTS)


def parse_source(name: str, block: Any, hardware: dict[str, Any], models: str) -> SourceSpec:
    key = f"pretrain.{name}"
    if not isinstance(block, dict):
        raise ConfigError(key, "expected a mapping", PRETRAIN_KEYS)
    for k in block:
        if k not in PRETRAIN_KEYS:
            raise ConfigError(f"{key}.{k}", "unknown key", PRETRAIN_KEYS)
    for required in ("data", "model"):
        if required not in block:
            raise ConfigError(f"{key}.{required}", "missing required key")
    seed = block.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{key}.seed", f"{seed!r} is out of range: must be an integer >= 0")
    optimizer = component(f"{key}.optimizer", FAMILIES["optimizer"].registry, block.get("optimizer", "adam"))
    study = {
        "family": "optimizer",
        "techniques": [optimizer["name"]],
        "technique_params": {optimizer["name"]: {k: v for k, v in optimizer.items() if k != "name"}},
        "seeds": 1,
        "data": block["data"],
        "model": block["model"],
        "train": block.get("train"),
        # The source keeps its best-validation weights: what a source model is chosen by.
        "base": {"stopping": {"name": "fixed_budget", "restore_best": True}},
    }
    spec = parse_study(name, study, hardware, section="pretrain")
    run = replace(spec.runs[0], study="pretrain", workload=name)
    return SourceSpec(name=name, run=run, seed=seed, weights=weights_path(models, name))


def parse_transfer(name: str, block: Any, hardware: dict[str, Any], sources: dict[str, SourceSpec]) -> StudySpec:
    key = f"transfer.{name}"
    if not isinstance(block, dict):
        raise ConfigError(key, "expected a mapping", [*STUDY_KEYS, "source"])
    if block.get("source") not in sources:
        raise ConfigError(f"{key}.source", f"unknown source {block.get('source')!r}", sorted(sources))
    source = sources[block["source"]]
    student = "model" in block or any("model" in (w or {}) for w in (block.get("workloads") or {}).values())
    study = {k: v for k, v in block.items() if k != "source"}
    if "techniques" in study or not study.get("probes"):  # a block of probes only has no family
        study.setdefault("family", "transfer")
    if student:
        return _student_study(name, study, hardware, source)
    study["model"] = {k: v for k, v in source.run.model.items() if k != "pretrained_file"}
    spec = parse_study(name, study, hardware, section="transfer")
    weights = {**source.run.model, "pretrained_file": source.weights}
    runs = [replace(r, model=weights) for r in spec.runs]
    workloads = {n: replace(w, model=weights) for n, w in spec.workloads.items()}
    return replace(spec, runs=runs, workloads=workloads, source=source.name, source_weights=source.weights)


def _student_study(name: str, study: dict[str, Any], hardware: dict[str, Any], source: SourceSpec) -> StudySpec:
    """A transfer study with a model of its own: the source teaches it (its weights file is the teacher_file
    of every strategy that has one); strategies that start from the source's weights do not fit its model."""
    key = f"transfer.{name}"
    if study.get("family", "transfer") != "transfer":
        raise ConfigError(f"{key}.family", "a transfer study with a `model:` (a student) varies `transfer`")
    allowed = [n for n in TRANSFER.names() if not TRANSFER.get(n).info.source]
    for i, t in enumerate(study.get("techniques") or []):
        if t in TRANSFER and TRANSFER.get(t).info.source:
            raise ConfigError(
                f"{key}.techniques[{i}]",
                f"{t!r} starts from the source's weights, which do not fit this study's own `model:` (a student "
                f"that the source, {source.name}, teaches)",
                allowed,
            )
    spec = parse_study(name, study, hardware, section="transfer")

    def taught(run):
        comps = dict(run.components)
        if "teacher_file" in comps["transfer"]:
            comps["transfer"] = {**comps["transfer"], "teacher_file": source.weights}
        return replace(run, components=comps)

    return replace(spec, runs=[taught(r) for r in spec.runs], source=source.name, source_weights=source.weights)
