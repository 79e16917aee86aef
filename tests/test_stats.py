"""The statistics every report relies on, checked against hand computation."""

from __future__ import annotations

import math

import pytest

from techbench.analysis.findings import holm
from techbench.analysis.stats import mean_ci, paired_diff_ci


def test_mean_ci_matches_t_interval_by_hand():
    est = mean_ci([1.0, 2.0, 3.0])
    # sd = 1, sem = 1/sqrt(3), t_{0.975, 2} = 4.302652729911275
    assert est.mean == pytest.approx(2.0)
    assert est.half_width == pytest.approx(4.302652729911275 / math.sqrt(3))
    assert est.n == 3 and est.excludes(5.0) and not est.excludes(0.0)  # CI = [-0.48, 4.48]


def test_mean_ci_drops_non_finite_and_handles_small_n():
    assert mean_ci([0.5, float("nan"), float("inf")]).n == 1
    assert math.isnan(mean_ci([0.5]).half_width)
    assert mean_ci([]).n == 0


def test_paired_difference_uses_common_seeds_only():
    a = {0: 0.9, 1: 0.8, 2: 0.7, 3: 0.1}
    b = {0: 0.8, 1: 0.7, 2: 0.6}
    est = paired_diff_ci(a, b)
    assert est.n == 3 and est.mean == pytest.approx(0.1) and est.half_width == pytest.approx(0.0, abs=1e-12)


def test_holm_adjustment():
    # m = 3: sorted p (0.01, 0.02, 0.04) -> (0.03, 0.04, 0.04) after the running max.
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
