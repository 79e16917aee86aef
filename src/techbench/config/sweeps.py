"""Sweeps: the `sweep:` of a study or workload -> axes -> sweep points, each a {section: {hp: value}} override
of a run config plus its label and its values as data ({"optimizer.lr": 0.01})."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from techbench.checks import component, merge_checked
from techbench.errors import ConfigError


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


@dataclass(frozen=True)
class Point:
    label: str  # the run's variant: "default" or "lr=0.01,momentum=0.9"
    override: dict[str, dict[str, Any]]  # section -> {hp: value}
    values: dict[str, Any]  # "section.hp" -> value
    axes: tuple[Axis, ...] = ()


def parse_axes(key: str, given: Any, sections: list[str], family=None, techniques=(), workload=None) -> list[Axis]:
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise ConfigError(key, "expected a mapping of '<section>.<hyperparameter>' -> list of values")
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
            axes.append(Axis(family.name, hp, values, technique=section, workload=workload))
        else:
            is_slot = family is not None and section == family.name
            axes.append(Axis(section, hp, values, slot_hp=is_slot, workload=workload))
    return axes


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "x".join(_fmt(x) for x in v)
    return str(v)


def points(axes: list[Axis]) -> list[Point]:
    """The cartesian product of ``axes``; one default point when there are none."""
    if not axes:
        return [Point("default", {}, {})]
    out = []
    for combo in itertools.product(*[[(a, v) for v in a.values] for a in axes]):
        override: dict[str, dict[str, Any]] = {}
        for a, v in combo:
            override.setdefault(a.section, {})[a.hp] = v
        label = ",".join(f"{a.hp}={_fmt(v)}" for a, v in combo)
        out.append(Point(label, override, {f"{a.section}.{a.hp}": v for a, v in combo}, tuple(axes)))
    return out


def applicable(axes: list[Axis], technique: dict[str, Any], workload: str) -> list[Axis]:
    return [
        a
        for a in axes
        if (a.technique is None or a.technique == technique["name"])
        and (not a.slot_hp or a.hp in technique)
        and (a.workload is None or a.workload == workload)
    ]


def check_slot_axes(key: str, axes: list[Axis], techs: list[dict[str, Any]]) -> None:
    for a in axes:
        if a.slot_hp and not any(a.hp in t for t in techs):
            allowed = sorted({k for t in techs for k in t if k != "name"})
            raise ConfigError(
                f"{key}.{a.section}.{a.hp}", "no technique of this study has this hyperparameter", allowed
            )


def source_key(key: str, axes: tuple[Axis, ...], section: str) -> str:
    """Where a swept value came from, as the user wrote it: `<study>[.workloads.<w>].sweep.<section|technique>`."""
    a = next(a for a in axes if a.section == section)
    where = f"{key}.workloads.{a.workload}.sweep" if a.workload else f"{key}.sweep"
    return f"{where}.{a.technique or section}"


def apply_point(key: str, parts: dict[str, Any], point: Point, registries: dict[str, Any]) -> dict[str, Any]:
    """The run-config sections with the point's values applied and checked against their registries."""
    out = dict(parts)
    for section, hp in point.override.items():
        where = source_key(key, point.axes, section)
        registry = registries[section]
        if registry is None:  # train: plain defaults
            out[section] = merge_checked(where, out[section], hp)
        else:
            out[section] = component(where, registry, {**out[section], **hp})
    return out
