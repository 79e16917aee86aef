"""Sweeps in params.yaml: `<section>.<hp>` for every run, `<technique>.<hp>` for one technique, the varied
slot's hyperparameter for the techniques that have it, and a workload's own `sweep:`."""

from __future__ import annotations

import pytest

from techbench.config import parse_params
from techbench.errors import ConfigError

DEBUG = {"name": "debug"}
MLP = {"name": "mlp", "hidden": [8]}


def _study(**block):
    base = {"seeds": 1, "data": DEBUG, "model": MLP, "family": "regularizer"}
    return parse_params({"studies": {"s": {**base, **block}}}).study("s")


def _labels(spec):
    return [(r.workload, r.label) for r in spec.runs]


def test_technique_axis_sweeps_only_that_technique():
    spec = _study(techniques=["none", "l2", "l1"], sweep={"l2.lam": [1.0, 10.0]})
    assert [lb for _, lb in _labels(spec)] == ["none", "l2@lam=1", "l2@lam=10", "l1"]
    assert [r.components["regularizer"].get("lam") for r in spec.runs] == [None, 1.0, 10.0, 0.5]


def test_slot_axis_sweeps_the_techniques_that_have_the_hyperparameter():
    spec = _study(techniques=["none", "l2", "elastic_net"], sweep={"regularizer.lam": [0.1, 1.0]})
    assert [lb for _, lb in _labels(spec)] == [
        "none",
        "l2@lam=0.1",
        "l2@lam=1",
        "elastic_net@lam=0.1",
        "elastic_net@lam=1",
    ]


def test_slot_axis_no_technique_has_is_an_error_naming_the_allowed_hyperparameters():
    with pytest.raises(ConfigError, match=r"studies\.s\.sweep\.regularizer\.p.*lam"):
        _study(techniques=["none", "l2"], sweep={"regularizer.p": [0.1]})


def test_workload_sweep_applies_to_its_workload_only_and_crosses_study_axes():
    spec = _study(
        techniques=["l2"],
        workloads={"wide": {"sweep": {"model.hidden": [[4], [16, 16]]}}, "plain": {}},
        sweep={"l2.lam": [1.0, 2.0]},
    )
    assert _labels(spec) == [
        ("wide", "l2@lam=1,hidden=4"),
        ("wide", "l2@lam=1,hidden=16x16"),
        ("wide", "l2@lam=2,hidden=4"),
        ("wide", "l2@lam=2,hidden=16x16"),
        ("plain", "l2@lam=1"),
        ("plain", "l2@lam=2"),
    ]
    assert spec.runs[1].model["hidden"] == [16, 16]


@pytest.mark.parametrize(
    "sweep,match",
    [
        ({"nosuch.lam": [1.0]}, "expected '<section or technique>.<hyperparameter>'"),
        ({"l2.lam": []}, "non-empty list"),
        ({"l2.lamda": [1.0]}, r"studies\.s\.sweep\.l2\.lamda: unknown key"),
        ({"l1.lam": [1.0]}, r"sweep\.l1\.lam: 'l1' is not a technique of this study.*none, l2"),
        ({"l2.lam": [-1.0]}, "out of range"),
    ],
)
def test_bad_sweeps_are_config_errors(sweep, match):
    with pytest.raises(ConfigError, match=match):
        _study(techniques=["none", "l2"], sweep=sweep)


def test_unknown_workload_key_lists_sweep_as_allowed():
    with pytest.raises(ConfigError, match="sweep"):
        _study(techniques=["l2"], workloads={"w": {"sweeep": {}}})


def test_a_workload_sweep_error_names_the_workload_key():
    with pytest.raises(ConfigError, match=r"studies\.s\.workloads\.w\.sweep\.model\.hiden: unknown key"):
        _study(techniques=["l2"], workloads={"w": {"sweep": {"model.hiden": [[4], [8]]}}})
