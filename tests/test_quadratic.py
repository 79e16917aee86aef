"""The quadratic_gd probe: GD on ½wᵀHw converges iff α < 2/λmax, at the rate max|1 − αλᵢ| theory predicts."""

from __future__ import annotations

import numpy as np
import pytest

from techbench.checks import component
from techbench.probes import PROBES, ProbeContext, run_probe
from techbench.probes.quadratic import iterate, quadratic_problems
from techbench.report.probes import VIEWS

KAPPAS = [10, 100, 10000]
SMALL = {"d": 10, "kappa_values": KAPPAS, "steps": 2000, "max_iters": 20_000, "digits": 1}


def _ctx(seed: int = 0) -> ProbeContext:
    return ProbeContext(data={}, model={}, train={}, hardware={}, components={}, seed=seed)


def _run(seed: int = 0):
    hp = component("probes.quadratic_gd", PROBES, {"name": "quadratic_gd", **SMALL})
    hp.pop("name")
    return run_probe("quadratic_gd", _ctx(seed), hp)


@pytest.fixture(scope="module")
def result():
    return _run(0)


def _gd_rows(result):
    return [r for r in result.rows if "c" in r]


def test_stable_step_sizes_converge_within_the_theoretical_bound(result):
    rows = [r for r in _gd_rows(result) if r["c"] <= 0.99]
    assert len(rows) == 3 * (len(KAPPAS) + 1)  # 3 stable c values × (3 κ + digits)
    for r in rows:
        assert r["verdict"] == "converges" and not r["diverged"]
        # I − αH is symmetric with spectral norm ρ = max|1 − αλᵢ|, so ‖w_T‖ ≤ ρ^T ‖w_0‖ exactly (up to round-off).
        assert r["final_rel_dist"] <= r["predicted_rate"] ** r["steps_run"] * (1 + 1e-9) + 1e-300
        if r["kappa"] <= 100 and "kappa=" in r["row"]:
            # ρ ≤ 0.99 here, and 0.99^2000 ≈ 2e-9.
            assert r["final_rel_dist"] < 1e-3


def test_step_sizes_past_two_over_lambda_max_diverge(result):
    rows = [r for r in _gd_rows(result) if r["c"] >= 1.01]
    assert len(rows) == 2 * (len(KAPPAS) + 1)
    for r in rows:
        assert r["verdict"] == "diverges"
        assert r["diverged"] == 1 or r["final_rel_dist"] > 1e3
        # ρ ≥ 1.02 and x0 has a sizeable top-eigenvector component, so 1e12 is reached well inside 2000 steps.
        assert 0 < r["diverged_step"] < 2000


def test_first_update_is_w0_minus_alpha_h_w0(result):
    h, lam, x0 = quadratic_problems(10, KAPPAS, 1.0, seed=0)[1]
    np.testing.assert_allclose(np.linalg.eigvalsh(h), lam, rtol=1e-10, atol=1e-12)
    assert np.linalg.norm(x0) == pytest.approx(1.0)
    for c in (0.5, 1.01):
        alpha = c * 2 / lam.max()
        expected = x0 - alpha * h @ x0
        w1 = iterate(h[None], x0[None], np.array([[alpha]]), steps=1)["w"][0, 0]
        np.testing.assert_allclose(w1, expected, rtol=1e-13, atol=1e-15)
        curve = result.curves[f"kappa=100 c={c}"]
        assert curve["x"][:2] == [0.0, 1.0]
        assert curve["rel_dist"][1] == pytest.approx(np.linalg.norm(expected), rel=1e-12)


def test_measured_rate_matches_max_abs_one_minus_alpha_lambda(result):
    for r in _gd_rows(result):
        assert r["measured_rate"] == pytest.approx(r["predicted_rate"], abs=1e-3), r["row"]


def test_heavy_ball_beats_gd_and_the_gap_grows_with_kappa(result):
    it = {r["row"]: r["iters_to_1e-6"] for r in result.rows if "method" in r}
    assert it["heavy_ball kappa=100"] < it["gd kappa=100"]
    assert it["gd kappa=10"] / it["heavy_ball kappa=10"] < it["gd kappa=100"] / it["heavy_ball kappa=100"]
    # GD at κ=1e4 contracts by (κ−1)/(κ+1) per step: ~6.9e4 iterations to 1e-6, past max_iters, so it is
    # reported as not reached rather than as a number.
    gd = next(r for r in result.rows if r["row"] == "gd kappa=10000")
    assert gd["predicted_iters"] > SMALL["max_iters"]
    assert (gd["iters_to_1e-6"], gd["reached"], gd["gd_over_method"], gd["measured_rate"]) == (-1, 0, -1.0, -1.0)
    assert all(v > 0 for k, v in it.items() if k != "gd kappa=10000")


def test_curves_are_subsampled_and_verdict_and_plot_work(result, tmp_path):
    assert all(len(c["x"]) <= 200 and len(c["x"]) == len(c["rel_dist"]) for c in result.curves.values())
    entry = VIEWS["quadratic_gd"]
    sentences = entry.verdict([result.as_dict()])
    assert sentences and sentences[0].claim == "C01" and sentences[0].outcome == "confirmed"
    assert entry.plot([result.as_dict()], tmp_path / "q.png").exists()


def test_same_seed_gives_identical_rows(result):
    assert _run(0).rows == result.rows
    assert _run(1).rows != result.rows
