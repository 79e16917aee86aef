"""Each family's claim verdicts under their rules, on groups whose numbers are made to hold, fail or stay open:
the rule's thresholds and CIs decide, not the family's sentences."""

from __future__ import annotations

import pytest

from techbench.report.families.regularization_claims import (
    bias_penalty_claim,
    capacity_claim,
    l1_zeros_claim,
    l2_sweep_claim,
)

SEEDS = range(5)


def _rows(seed_values: dict[str, list[float]] | None = None, sweep=None, **metrics) -> list[dict]:
    """Five seeds; ``seed_values`` give a per-seed value of a row key, ``metrics`` a constant final metric."""
    rows = []
    for s in SEEDS:
        row = {"seed": s, "sweep": sweep or {}, "metrics": dict(metrics), "outcome": "ok"}
        for key, vals in (seed_values or {}).items():
            row[key] = vals[s]
        rows.append(row)
    return rows


def _jitter(mean: float, spread: float = 0.002) -> list[float]:
    return [mean + spread * (s - 2) for s in SEEDS]


def _l2_group(lam: float, norm: float, val: float, train: float, zeros: float = 0.0) -> list[dict]:
    values = {"val_acc": _jitter(val), "train_final_acc": _jitter(train), "test_acc": _jitter(val)}
    return _rows(values, {"l2.lam": lam}, **{"weights/l2_norm": norm, "weights/zero_frac": zeros})


def _sweep(vals: list[float], trains: list[float], zeros: float = 0.0) -> dict[str, list[dict]]:
    groups = {"none": _l2_group(0.0, 10.0, vals[0], trains[0])}
    for i, lam in enumerate([1.0, 10.0, 100.0], start=1):
        groups[f"l2@lam={lam:g}"] = _l2_group(lam, 10.0 / (1 + i), vals[i], trains[i], zeros)
    return groups


@pytest.mark.parametrize(
    "vals, trains, zeros, outcome",
    [
        ([0.50, 0.55, 0.52, 0.40], [0.99, 0.95, 0.90, 0.60], 0.0, "confirmed"),
        ([0.50, 0.55, 0.52, 0.40], [0.99, 0.95, 0.90, 0.60], 0.05, "refuted"),  # 5 % exact zeros
        ([0.40, 0.45, 0.50, 0.55], [0.99, 0.95, 0.90, 0.96], 0.0, "inconclusive"),  # peak at the largest λ
    ],
)
def test_c17_reads_the_l2_sweep_with_no_penalty_as_lambda_zero(vals, trains, zeros, outcome):
    v = l2_sweep_claim(_sweep(vals, trains, zeros))
    assert (v.claim, v.outcome) == ("C17", outcome)
    assert "λ ∈ {0, 1, 10, 100}" in v.evidence and "ρ(‖W‖, λ) = -1.00" in v.evidence


def test_c17_needs_three_sweep_points_and_the_baseline():
    groups = _sweep([0.5, 0.55, 0.52, 0.4], [0.99, 0.95, 0.9, 0.6])
    assert l2_sweep_claim({k: g for k, g in groups.items() if k != "none"}) is None
    assert l2_sweep_claim({k: g for k, g in groups.items() if k != "l2@lam=100"}) is None


@pytest.mark.parametrize(
    "zeros, l1_val, outcome", [(0.3, 0.55, "confirmed"), (0.02, 0.55, "refuted"), (0.3, 0.45, "inconclusive")]
)
def test_c18_counts_exact_zeros_of_subgradient_l1_at_matched_validation_accuracy(zeros, l1_val, outcome):
    groups = {
        "l1@lam=0.1": _rows({"val_acc": _jitter(l1_val)}, {"l1.lam": 0.1}, **{"weights/zero_frac": zeros}),
        "l2@lam=10": _rows({"val_acc": _jitter(0.55)}, {"l2.lam": 10.0}, **{"weights/zero_frac": 0.0}),
        "l1_proximal@lam=30": _rows({"val_acc": _jitter(0.5)}, {"l1_proximal.lam": 30}, **{"weights/zero_frac": 0.6}),
    }
    v = l1_zeros_claim(groups)
    assert (v.claim, v.outcome) == ("C18", outcome)
    assert f"{100 * zeros:.2f} %" in v.evidence and "proximal L1 (`l1_proximal@lam=30`) 60.0 %" in v.evidence


@pytest.mark.parametrize(
    "diffs, outcome",
    [
        ([0.001, -0.001, 0.0, 0.002, -0.002], "confirmed"),
        ([0.02, 0.021, 0.019, 0.02, 0.02], "refuted"),
        ([0.01, -0.01, 0.0, 0.02, -0.02], "inconclusive"),
    ],
)
def test_c21_is_two_one_sided_tests_at_half_a_point(diffs, outcome):
    groups = {
        "l2@lam=10": _rows({"val_acc": _jitter(0.5), "test_acc": [0.5 + d for d in diffs]}, {"l2.lam": 10.0}),
        "l2_no_bias": _rows({"val_acc": _jitter(0.5), "test_acc": [0.5] * 5}),
    }
    v = bias_penalty_claim(groups)
    assert (v.claim, v.outcome) == ("C21", outcome) and "90 % CI" in v.evidence


@pytest.mark.parametrize(
    "train_err, val_err, outcome",
    [
        ([0.5, 0.3, 0.1, 0.02], [0.55, 0.4, 0.35, 0.45], "confirmed"),
        ([0.5, 0.3, 0.1, 0.02], [0.55, 0.45, 0.4, 0.35], "refuted"),  # validation error still falling
        ([0.1, 0.3, 0.2, 0.4], [0.55, 0.4, 0.35, 0.45], "refuted"),  # train error does not fall
    ],
)
def test_c14_needs_falling_train_error_and_a_u_shaped_validation_error(train_err, val_err, outcome):
    labels = [f"none@hidden={w}" for w in (4, 16, 64, 256)]
    groups = {
        lb: _rows({"final_val_acc": _jitter(1 - v), "train_final_acc": _jitter(1 - t)})
        for lb, t, v in zip(labels, train_err, val_err, strict=True)
    }
    curves = {"train error": train_err, "validation error (final)": val_err}
    v = capacity_claim(groups, labels, curves)
    assert (v.claim, v.outcome) == ("C14", outcome)
