"""The restart study's report sentences and figures on hand-set rows, and the mode_connectivity probe on the
debug workload: endpoints of the path are the trained models, a convex model has no barrier, same seed gives the
same numbers."""

from __future__ import annotations

import re
import statistics

import pytest

from techbench.checks import component
from techbench.config import parse_params
from techbench.probes import PROBES, ProbeContext, run_probe
from techbench.probes.mode_connectivity import barrier, path_metrics, restart_context, train_pairs
from techbench.report.families import FindingsContext
from techbench.report.families.restarts import findings as restart_family_findings
from techbench.report.probes.mode_connectivity import plot, verdict
from techbench.techniques import FAMILIES
from techbench.workloads import DATASETS
from techbench.workloads.evaluation import evaluate

# --- restart_findings on hand-set rows ----------------------------------------------------------------------------


def restart_findings(groups: dict, stem):
    """The family's findings with the techniques' flags as the study's results carry them."""
    flags = {t: FAMILIES["restart"].describe(t) for t in {label.split("@")[0] for label in groups}}
    return restart_family_findings(groups, FindingsContext(stem, stem.name, flags))


def _row(technique: str, seed: int, test_acc: float, compute: float, members=None, procedure=None, curves=None):
    return {
        "technique": technique,
        "variant": "default",
        "seed": seed,
        "outcome": "completed",
        "test_acc": test_acc,
        "compute_epochs": compute,
        "final_val_loss": None,  # restart runs log no per-epoch val/loss curve
        "members": members or {},
        "procedure": procedure or {},
        "procedure_curves": curves or {},
    }


RR_VAL_LOSS = [[0.5, 0.4, 0.6, 0.45], [0.55, 0.42, 0.48, 0.65]]
RR_TEST_ACC = [[0.79, 0.84, 0.74, 0.81], [0.77, 0.83, 0.80, 0.72]]


def _groups() -> dict[str, list[dict]]:
    rr = [
        _row(
            "random_restarts",
            s,
            test_acc=[0.84, 0.83][s],
            compute=12.0,
            members={
                "val_loss": RR_VAL_LOSS[s],
                "val_acc": [[0.80, 0.85, 0.75, 0.82], [0.78, 0.84, 0.81, 0.70]][s],
                "test_acc": RR_TEST_ACC[s],
                "test_loss": [[0.6, 0.5, 0.7, 0.6], [0.62, 0.52, 0.58, 0.68]][s],
            },
            procedure={"restarts_made": 4.0},
            curves={
                "expected_best_of_n": [[0.79, 0.82, 0.83, 0.84], [0.77, 0.80, 0.82, 0.83]][s],
                "ensemble_acc": [[0.79, 0.83, 0.85, 0.86], [0.77, 0.81, 0.84, 0.85]][s],
                "ensemble_nll": [[0.6, 0.5, 0.45, 0.4], [0.62, 0.52, 0.47, 0.44]][s],
            },
        )
        for s in (0, 1)
    ]
    init_he = [_row("init_he", s, [0.82, 0.84][s], 12.0, {"val_loss": [[0.4, 0.5], [0.45, 0.55]][s]}) for s in (0, 1)]
    ils = [
        _row(
            "iterated_local_search",
            s,
            [0.85, 0.84][s],
            10.0,
            {
                "val_loss": [[0.6, 0.55, 0.58, 0.5], [0.52, 0.47, 0.5, 0.49]][s],
                "accepted": [[1, 1, 0, 1], [1, 1, 0, 0]][s],
            },
            {"accept_rate": [0.5, 0.25][s], "best_val_loss": [0.5, 0.47][s]},
        )
        for s in (0, 1)
    ]
    snap = [
        _row(
            "snapshot_ensemble",
            s,
            [0.83, 0.82][s],
            3.0,
            {"val_loss": [[0.6, 0.5, 0.45], [0.62, 0.52, 0.46]][s]},
            {
                "snapshot_ensemble_test_acc": [0.86, 0.84][s],
                "last_snapshot_test_acc": [0.83, 0.82][s],
                "independent_ensemble_test_acc": [0.85, 0.83][s],
            },
        )
        for s in (0, 1)
    ]
    abandon = [
        _row(
            "early_abandon",
            s,
            [0.83, 0.83][s],
            [9.0, 6.0][s],
            {"val_loss": [[0.5, 0.45, 0.7], [0.5, 0.44, 0.8]][s]},
            {"compute_saved_frac": [0.25, 0.5][s]},
        )
        for s in (0, 1)
    ]
    return {
        "random_restarts": rr,
        "init_he": init_he,
        "iterated_local_search": ils,
        "snapshot_ensemble": snap,
        "early_abandon": abandon,
    }


def _line(lines: list[str], start: str, contains: str) -> str:
    hits = [ln for ln in lines if ln.startswith(start) and contains in ln]
    assert hits, f"no sentence starting {start!r} containing {contains!r} in {lines}"
    return hits[0]


@pytest.fixture(scope="module")
def findings(tmp_path_factory):
    stem = tmp_path_factory.mktemp("report") / "restarts_default"
    return restart_findings(_groups(), stem)


def test_distribution_median_and_best(findings):
    lines, _ = findings
    pooled = [v for seed in RR_VAL_LOSS for v in seed]
    assert statistics.median(pooled) == pytest.approx(0.49)
    text = _line(lines, "`random_restarts`", "validation loss over its 8")
    assert f"median {statistics.median(pooled):.4f}" in text and f"best {min(pooled):.4f}" in text
    assert "median 80.50 %" in text  # validation accuracy: (0.80 + 0.81) / 2


def test_best_of_n_and_ensembles(findings):
    lines, _ = findings
    # expected_best_of_n: mean over seeds 0.78 at n = 1, 0.835 at n = 4; gain (0.05, 0.06) -> 5.50 pp
    text = _line(lines, "`random_restarts`", "best of 1 → best of 4")
    assert "78.00 % → 83.50 %" in text and "5.50 ±" in text
    # full ensemble 0.86 / 0.85 vs mean member 0.795 / 0.78 -> gains 0.065, 0.07 -> 6.75 pp
    text = _line(lines, "`random_restarts`", "ensemble of 4 restarts")
    assert "85.50 %" in text and "78.75 %" in text and "6.75 ±" in text
    # NLL: full ensemble 0.4 and 0.44 vs mean member 0.6 and 0.6 -> -0.18
    assert "NLL 0.6100 (1 member) → 0.4200 (4)" in text and "-0.1800 ±" in text


def test_perturbation_snapshot_init_and_scheduling(findings):
    lines, _ = findings
    ils = _line(lines, "`iterated_local_search`", "accept rate")
    assert "37.5 ±" in ils and "kept validation loss 0.4850 vs the first solution's 0.5600" in ils
    assert "-0.0750 ±" in ils
    snap = _line(lines, "`snapshot_ensemble`", "snapshot ensemble")
    assert "85.00 ±" in snap and "ensemble − last 2.50 ±" in snap and "snapshot − independent 1.00 ±" in snap
    he = _line(lines, "`init_he`", "random_restarts")  # PyTorch's default scheme
    assert "kept solution -0.50 ±" in he  # (0.82 − 0.84, 0.84 − 0.83)
    assert "median 0.4750" in _line(lines, "`init_he`", "validation loss")
    abandon = _line(lines, "`early_abandon` vs `random_restarts`", "compute saved")
    assert "compute saved 37.5 ±" in abandon and "(7.5 vs 12.0 epochs)" in abandon and "quality lost 0.50 ±" in abandon
    compute = _line(lines, "Compute", "epochs")
    assert "`snapshot_ensemble` 3.0 epochs, 82.50 ±" in compute
    assert compute.index("`snapshot_ensemble`") < compute.index("`early_abandon`") < compute.index("`random_restarts`")


def test_sentences_are_table_safe_and_figures_are_png(findings):
    lines, figures = findings
    assert lines and not any("|" in ln for ln in lines)
    names = {f.name for f in figures}
    assert {"restarts_default_restarts.png", "restarts_default_restarts_curves.png"} <= names
    for f in figures:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 1000


def test_missing_techniques_are_skipped(tmp_path):
    assert restart_findings({}, tmp_path / "empty") == ([], [])
    groups = _groups()
    only = {"random_restarts": groups["random_restarts"]}
    lines, figures = restart_findings(only, tmp_path / "only_rr")
    assert not any("init_" in ln or "accept rate" in ln or "compute saved" in ln for ln in lines)
    assert figures
    # Rows without restart fields (a single run) and an init scheme without random_restarts: no error.
    plain = {"single": [{"seed": 0, "test_acc": 0.8, "technique": "single"}], "init_he": groups["init_he"]}
    lines, _ = restart_findings(plain, tmp_path / "plain")
    assert not any("test accuracy −" in ln for ln in lines)
    # Scheduling without random_restarts falls back to the procedure's own count.
    lines, _ = restart_findings({"early_abandon": groups["early_abandon"]}, tmp_path / "abandon")
    assert any("saved 37.5 ±" in ln for ln in lines)


# --- the mode_connectivity probe on the debug workload -----------------------------------------------------------


def _components() -> dict:
    params = parse_params(
        {
            "studies": {
                "s": {
                    "family": "optimizer",
                    "techniques": ["sgd"],
                    "seeds": 1,
                    "data": {"name": "debug"},
                    "model": {"name": "mlp", "hidden": [16]},
                    "train": {"epochs": 3, "batch_size": 32},
                    "technique_params": {"sgd": {"lr": 0.1}},
                }
            }
        }
    )
    return params.studies["s"].runs[0].components


def _ctx(model: dict, seed: int = 0) -> ProbeContext:
    return ProbeContext(
        data=component("data", DATASETS, {"name": "debug"}),
        model=model,
        train={"epochs": 3, "batch_size": 32},
        hardware={"accelerator": "cpu", "precision": "32-true", "deterministic": True},
        components=_components(),
        seed=seed,
    )


MLP = {"name": "mlp", "hidden": [16]}
HP = PROBES.get("mode_connectivity").defaults


@pytest.fixture(scope="module")
def mlp_runs():
    return [run_probe("mode_connectivity", _ctx(MLP, 0), HP) for _ in range(2)]


def test_path_endpoints_are_the_trained_models():
    rctx = restart_context(_ctx(MLP))
    alphas = [0.0, 0.5, 1.0]
    for model_a, model_b in train_pairs(rctx).values():
        path = path_metrics(model_a, model_b, rctx.data, alphas)
        for i, model in ((0, model_a), (-1, model_b)):
            for split in ("train", "test"):
                m = evaluate(model, getattr(rctx.data, f"x_{split}"), getattr(rctx.data, f"y_{split}"))
                assert path[f"{split}_loss"][i] == pytest.approx(m["loss"], abs=1e-6)
                assert path[f"{split}_acc"][i] == pytest.approx(m["acc"], abs=1e-6)
    assert rctx.spent_epochs == 9  # three solutions of three epochs


def test_probe_rows_match_curves_and_barrier_is_nonnegative(mlp_runs):
    result = mlp_runs[0]
    assert [r["row"] for r in result.rows] == ["different_init", "same_init"]
    for row in result.rows:
        cur = result.curves[row["row"]]
        assert len(cur["x"]) == HP["points"] and cur["x"][0] == 0.0 and cur["x"][-1] == 1.0
        assert cur["train_loss"][0] == pytest.approx(row["train_loss_a"], abs=1e-6)
        assert cur["train_loss"][-1] == pytest.approx(row["train_loss_b"], abs=1e-6)
        assert row["barrier_train"] >= -1e-9 and row["barrier_test"] >= -1e-9
        assert row["barrier_train"] == pytest.approx(barrier(cur["x"], cur["train_loss"]))
        scale = (row["train_loss_a"] + row["train_loss_b"]) / 2
        assert row["connected"] == int(row["barrier_train"] <= HP["tolerance"] * scale)
    # The two pairs share θ_a.
    assert result.rows[0]["train_loss_a"] == result.rows[1]["train_loss_a"]


def test_same_seed_same_numbers(mlp_runs):
    a, b = mlp_runs
    assert a.rows == b.rows and a.curves == b.curves


def test_convex_model_has_no_barrier():
    result = run_probe("mode_connectivity", _ctx({"name": "logreg"}), {**HP, "points": 6})
    for row in result.rows:
        assert -1e-9 <= row["barrier_train"] <= 1e-6 and row["connected"] == 1
        assert row["barrier_test"] <= 1e-6  # the test loss is convex in the weights too


def test_plot_and_verdict(mlp_runs, tmp_path):
    a, b = mlp_runs
    results = [{**a.as_dict(), "seed": 0}, {**b.as_dict(), "seed": 1}]
    path = plot(results, tmp_path / "lmc.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sentences = verdict(results)
    assert len(sentences) == 3 and sentences[-1].startswith("Found:")
    barrier_train = a.rows[0]["barrier_train"]
    assert f"{barrier_train:.4f}" in sentences[0] and re.search(r"in \d of 2 seeds", sentences[0])
    assert all(re.search(r"\d", s) for s in sentences)


def test_bad_hyperparameters_are_rejected():
    from techbench.errors import ConfigError

    with pytest.raises(ConfigError):
        component("probes.mode_connectivity", PROBES, {"name": "mode_connectivity", "points": 1})
