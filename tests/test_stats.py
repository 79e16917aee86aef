"""The statistics every report relies on, checked against hand computation."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from techbench.analysis.findings import adjust, chosen_on_validation, compare, describe, holm
from techbench.analysis.profiles import profile, ratios, score
from techbench.analysis.stats import censored_median, mean_ci, paired_diff_ci, paired_test
from techbench.analysis.target import fmt_target, to_target


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


# --- tests against a baseline ---------------------------------------------------------------------------------


def test_a_constant_nonzero_paired_difference_is_p_zero_and_a_zero_one_is_identical():
    base = {s: 0.5 + 0.01 * s for s in range(5)}
    assert paired_test({s: v + 0.02 for s, v in base.items()}, base) == (0.0, "constant")
    assert paired_test(dict(base), base) == (1.0, "identical")
    assert math.isnan(paired_test({0: 0.6}, base)[0])
    a = {0: 0.61, 1: 0.50, 2: 0.58, 3: 0.55, 4: 0.60}
    p, kind = paired_test(a, base)
    assert kind == "varies" and p == pytest.approx(stats.ttest_rel(list(a.values()), list(base.values())).pvalue)


def test_censored_median_counts_the_seeds_that_never_reached_the_target():
    # 5 seeds: 3 reached at epochs 3, 5, 7; 2 ran 10 epochs without reaching. Kaplan-Meier: S = 0.8, 0.6, 0.4
    # after 3, 5, 7, so the median is 7 — the mean of the reached seeds alone (5) flatters the technique.
    assert censored_median([3, 5, 7, 10, 10], [True, True, True, False, False]) == 7
    assert censored_median([3, 5, 10, 10, 10], [True, True, False, False, False]) is None  # most never reached
    assert censored_median([4, 2, 6], [True, True, True]) == 4  # nothing censored: the plain median
    rows = [_row(s, hit) for s, hit in enumerate([3, 5, 7, None, None])]
    assert to_target(rows, "epochs") == (3, 5, 7)
    assert fmt_target(rows, "epochs") == "7.0 (3/5 reached)"


def _row(seed, hit, epochs=10):
    return {"seed": seed, "epochs_to_target": hit, "censored_at": {"epochs": epochs, "seconds": 1.0, "updates": 100}}


def _groups(workload_shift: float):
    """baseline, a configuration better on every seed by a varying amount, one identical to the baseline."""
    base = [0.60, 0.62, 0.58, 0.61, 0.59]
    better = [b + workload_shift + d for b, d in zip(base, [0.01, 0.03, 0.02, 0.025, 0.015], strict=True)]

    def rows(accs, val):
        return [
            {"seed": s, "test_acc": a, "val_acc": v, "outcome": "ok"}
            for s, (a, v) in enumerate(zip(accs, val, strict=True))
        ]

    return {
        "base": rows(base, [0.9] * 5),
        "better": rows(better, [0.5] * 5),  # lower validation accuracy: not the one chosen on validation
        "same": rows(base, [0.7] * 5),
    }


def test_comparisons_are_holm_adjusted_over_the_whole_report_with_matching_intervals():
    groups = {"w1": _groups(0.02), "w2": _groups(0.0)}
    raw = compare("w1", groups["w1"], "base") + compare("w2", groups["w2"], "base")
    assert [(c.workload, c.label, c.kind) for c in raw] == [
        ("w1", "better", "varies"),
        ("w1", "same", "identical"),
        ("w2", "better", "varies"),
        ("w2", "same", "identical"),
    ]
    done = adjust(raw, groups)
    assert [c.p for c in done] == pytest.approx(holm([c.p for c in raw]))
    assert all(c.m == 4 for c in done)
    for before, after in zip(raw, done, strict=True):  # Bonferroni interval at 1 - 0.05/4: wider than 95 %
        assert after.diff.mean == pytest.approx(before.diff.mean)
        if before.kind == "varies":
            assert after.diff.half_width > before.diff.half_width
            assert after.diff.excludes(0.0) == (before.p < 0.05 / 4)


def test_the_best_is_chosen_on_validation_and_the_rest_tested_against_the_baseline():
    groups = _groups(0.02)
    assert chosen_on_validation(groups) == "base"  # "better" has the highest test accuracy, not validation
    lines = describe(groups, adjust(compare("w", groups, "base"), {"w": groups}), "base")
    assert lines[0].startswith("Chosen on validation: **base**")
    assert any(ln.startswith("Better than the baseline") and "better (" in ln for ln in lines)
    assert any(ln.startswith("Identical test accuracy to the baseline on every seed: same") for ln in lines)
    assert not any("seeds per configuration" in ln for ln in lines)  # 5 seeds: no warning


def test_performance_profile_and_score_by_hand():
    times = {"w1": {"a": 10.0, "b": 20.0, "c": None}, "w2": {"a": 30.0, "b": 15.0, "c": 60.0, "only_w2": 1.0}}
    r = ratios(times)
    assert r == {"w1": {"a": 1.0, "b": 2.0, "c": math.inf}, "w2": {"a": 2.0, "b": 1.0, "c": 4.0}}
    assert profile(r, "a", 1.0) == 0.5 and profile(r, "a", 2.0) == 1.0 and profile(r, "c", 3.9) == 0.0
    # a: (1 + (log 4 − log 2) / log 4) / 2 = 0.75; c: reached w2 at exactly τ_max, unreached on w1: 0.
    assert score(r, "a") == pytest.approx(0.75) and score(r, "b") == pytest.approx(0.75)
    assert score(r, "c") == 0.0
