"""Bias-variance decomposition: the classifier decomposition from stored predictions, and the polynomial probe
(claim C16: bias² falls and variance rises with model capacity; MSE = bias² + variance + σ²)."""

from __future__ import annotations

import numpy as np
import pytest

from techbench.analysis.bias_variance import decompose_probs
from techbench.checks import component
from techbench.errors import ConfigError
from techbench.probes import PROBES, ProbeContext, run_probe
from techbench.report.probes.bias_variance import plot, verdict

DEGREES = [1, 2, 3, 4, 5, 6, 8, 10, 12]


def _dirichlet(s: int, n: int, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(c), size=(s, n)), rng.integers(0, c, size=n)


def test_brier_error_is_exactly_bias2_plus_variance():
    for s, n, c, seed in [(5, 40, 3, 0), (8, 100, 10, 1), (2, 1, 2, 2)]:
        probs, y = _dirichlet(s, n, c, seed)
        out = decompose_probs(probs, y)
        assert out["error"] == pytest.approx(out["bias2"] + out["variance"], abs=1e-12)
        assert out["variance"] > 0 and out["runs"] == s
        # The definition, computed directly.
        onehot = np.eye(c)[y]
        assert out["error"] == pytest.approx(np.mean([((p - onehot) ** 2).sum(-1).mean() for p in probs]), abs=1e-12)


def test_a_single_run_has_no_variance():
    probs, y = _dirichlet(1, 50, 4)
    out = decompose_probs(probs, y)
    assert out["variance"] == 0.0 and out["variance01"] == 0.0
    assert out["error"] == pytest.approx(out["bias2"], abs=1e-15)
    assert out["error01"] == out["bias01"]


def test_identical_runs_have_zero_variance_and_error01_equals_bias01():
    probs, y = _dirichlet(1, 60, 5, seed=3)
    out = decompose_probs(np.repeat(probs, 4, axis=0), y)
    assert out["variance01"] == 0.0 and out["bias01"] == out["error01"]
    assert out["variance"] == pytest.approx(0.0, abs=1e-15) and out["runs"] == 4


def test_zero_one_quantities_by_hand():
    # Labels y = [0, 1]. Runs predict (argmax) example 0 as 0, 0, 1 and example 1 as 2, 2, 1.
    def onehot_like(cls: int) -> list[float]:
        p = [0.1, 0.1, 0.1]
        p[cls] = 0.8
        return p

    preds = [[0, 2], [0, 2], [1, 1]]  # (run, example)
    probs = np.array([[onehot_like(c) for c in run] for run in preds])
    out = decompose_probs(probs, np.array([0, 1]))
    # Main predictions: 0 (right) and 2 (wrong) -> bias01 = 1/2. One run in three disagrees with the main
    # prediction on each example -> variance01 = 1/3. Errors: 1/3 on example 0, 2/3 on example 1 -> 1/2.
    assert out["bias01"] == pytest.approx(0.5)
    assert out["variance01"] == pytest.approx(1 / 3)
    assert out["error01"] == pytest.approx(0.5)


def test_decompose_probs_rejects_mismatched_shapes():
    probs, y = _dirichlet(3, 10, 3)
    with pytest.raises(ValueError):
        decompose_probs(probs[0], y)
    with pytest.raises(ValueError):
        decompose_probs(probs, y[:5])
    with pytest.raises(ValueError):
        decompose_probs(probs, y + 3)


def _ctx(seed: int = 0) -> ProbeContext:
    return ProbeContext(data={}, model={}, train={}, hardware={}, components={}, seed=seed)


def _hp(**given) -> dict:
    hp = component("probes.bias_variance_poly", PROBES, {"name": "bias_variance_poly", **given})
    hp.pop("name")
    return hp


@pytest.fixture(scope="module")
def result():
    return run_probe("bias_variance_poly", _ctx(0), _hp())


def _by_degree(result) -> dict[int, dict]:
    return {r["degree"]: r for r in result.rows}


def test_rows_and_curves_have_the_documented_shape(result):
    rows = _by_degree(result)
    assert list(rows) == DEGREES
    for d, r in rows.items():
        assert r["row"] == f"degree {d}"
        assert r["noise"] == pytest.approx(0.3**2)
        assert r["variance"] > 0 and r["test_mse"] > 0
    cur = result.curves["decomposition"]
    assert cur["x"] == [float(d) for d in DEGREES]
    assert cur["bias2"] == [rows[d]["bias2"] for d in DEGREES]
    assert len(cur["variance"]) == len(cur["test_mse"]) == len(DEGREES)
    assert len(result.notes) == 1


def test_identity_holds_within_two_percent_at_every_degree(result):
    for r in result.rows:
        assert r["identity_residual"] < 0.02, r
        total = r["bias2"] + r["variance"] + r["noise"]
        assert abs(r["test_mse"] - total) / r["test_mse"] == pytest.approx(r["identity_residual"], rel=1e-9)


def test_bias_falls_and_variance_rises_with_the_degree(result):
    rows = _by_degree(result)
    assert rows[1]["bias2"] > rows[5]["bias2"]
    assert rows[12]["variance"] > rows[3]["variance"]
    # A straight line cannot follow sin(2πx): its bias² is far above its variance and the noise.
    assert rows[1]["bias2"] > 0.15 and rows[1]["bias2"] > 5 * rows[1]["variance"]


def test_same_seed_gives_identical_rows(result):
    again = run_probe("bias_variance_poly", _ctx(0), _hp())
    assert again.rows == result.rows
    other = run_probe("bias_variance_poly", _ctx(1), _hp())
    assert other.rows != result.rows


def test_verdict_states_the_numbers(result):
    res = [result.as_dict(), run_probe("bias_variance_poly", _ctx(1), _hp()).as_dict()]
    sentences = verdict(res)
    assert len(sentences) == 3
    text = " ".join(sentences)
    worst = max(r["identity_residual"] for x in res for r in x["rows"])
    assert f"{worst:.2%}" in text and "it holds." in text
    assert "Spearman ρ(bias², degree) = " in text and "ρ(variance, degree) = " in text
    assert "confirmed" in sentences[1]
    mean_mse = {d: np.mean([_by_degree_dict(x)[d]["test_mse"] for x in res]) for d in DEGREES}
    best = min(mean_mse, key=mean_mse.get)
    assert f"is at degree {best};" in sentences[2] and f"{mean_mse[best]:.4g}" in sentences[2]


def _by_degree_dict(res: dict) -> dict[int, dict]:
    return {r["degree"]: r for r in res["rows"]}


def test_plot_writes_a_png(result, tmp_path):
    path = plot([result.as_dict()], tmp_path / "bv.png")
    assert path is not None and path.exists()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot([], tmp_path / "none.png") is None


@pytest.mark.parametrize(
    "given",
    [
        {"n": 1},
        {"sets": 1},
        {"noise": -0.1},
        {"test_points": 0},
        {"degrees": []},
        {"degrees": [1, 30]},
        {"degrees": [2, 2]},
        {"degrees": [-1]},
        {"degrees": [1.5]},
    ],
)
def test_impossible_hyperparameters_are_rejected(given):
    with pytest.raises(ConfigError):
        _hp(**given)
