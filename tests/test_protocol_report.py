"""The report's protocol sentences on hand-set rows: restart procedures against the single run of equal
compute, procedures that did nothing, and stopping rules that restore the same weights (one finding, not
several) compared on where they stop and on their last weights."""

from __future__ import annotations

import pytest

from techbench.report.families import FindingsContext
from techbench.report.families.restarts_compute import did_nothing_lines, equal_compute_lines
from techbench.report.families.stopping import early_stopping_lines


def _restart(technique, variant, seed, acc, compute, procedure=None):
    return {
        "technique": technique,
        "variant": variant,
        "seed": seed,
        "test_acc": acc,
        "compute_epochs": compute,
        "procedure": procedure or {},
    }


def _restart_groups():
    return {
        "single@epochs=20": [_restart("single", "epochs=20", s, 0.70 + 0.01 * s, 20.0) for s in range(5)],
        "single@epochs=160": [_restart("single", "epochs=160", s, 0.74 + 0.01 * s, 160.0) for s in range(5)],
        "random_restarts": [
            _restart("random_restarts", "default", s, [0.74, 0.76, 0.75, 0.78, 0.77][s], 160.0) for s in range(5)
        ],
        "on_plateau": [
            _restart("on_plateau", "default", s, 0.70 + 0.01 * s, 20.0, {"restarts_made": 0.0}) for s in range(5)
        ],
        "iterated_local_search": [
            _restart("iterated_local_search", "default", s, 0.72, 60.0, {"accept_rate": 0.5}) for s in range(5)
        ],
    }


def test_every_procedure_is_compared_with_the_single_run_of_its_compute(tmp_path):
    lines = equal_compute_lines(_restart_groups(), FindingsContext(tmp_path / "r", "r"))
    rr = next(ln for ln in lines if ln.startswith("`random_restarts`"))
    # random_restarts − single@160 per seed: 0, 0.01, −0.01, 0.01, −0.01 → mean 0
    assert "vs `single@epochs=160` at equal compute (160 vs 160 epochs)" in rr and "0.00 ±" in rr
    assert rr.endswith("no different.")
    plateau = next(ln for ln in lines if ln.startswith("`on_plateau`"))
    assert "vs `single@epochs=20`" in plateau and "0.00 ± 0.00 pp" in plateau
    ils = next(ln for ln in lines if ln.startswith("`iterated_local_search`"))
    assert "no single run of equal compute" in ils and "20, 160 epochs" in ils


def test_a_procedure_that_did_nothing_is_labelled(tmp_path):
    lines = did_nothing_lines(_restart_groups(), FindingsContext(tmp_path / "r", "r"))
    assert lines == [
        "`on_plateau` did nothing on 5/5 seeds (no restart made or none accepted): there it is the single run "
        "under another name."
    ]


def _stop(label, seed, epoch, fired, best_epoch, last, best):
    return {
        "technique": label,
        "variant": "default",
        "seed": seed,
        "epochs_run": epoch,
        "curves": {"val/loss": [1.0, 0.8, 0.7, 0.75, 0.8, 0.9]},
        "metrics": {
            "stop/epoch": epoch,
            "stop/fired": fired,
            "stop/best_epoch": best_epoch,
            "stop/epochs_saved": 6 - epoch,
            "stop/test_acc_last": last,
            "stop/test_acc_best": best,
        },
    }


def test_stopping_rules_that_restore_the_same_weights_are_one_finding(tmp_path):
    groups = {
        "fixed_budget": [_stop("fixed_budget", s, 6, 0.0, 3, 0.60, 0.70) for s in range(3)],
        "patience": [_stop("patience", s, 4, 1.0, 3, 0.66, 0.70) for s in range(3)],
        "slope": [_stop("slope", s, 6, 0.0, 3, 0.60, 0.70) for s in range(3)],
    }
    lines, fig = early_stopping_lines(groups, tmp_path / "stops.png", "t")
    patience = next(ln for ln in lines if ln.startswith("`patience`"))
    assert "fired on 3/3 seeds;" in patience and "last weights − fixed budget's last 6.00 ± 0.00 pp" in patience
    assert "never fired" in next(ln for ln in lines if ln.startswith("`slope`"))
    same = next(ln for ln in lines if "restore the same best-validation epoch" in ln)
    assert same.startswith("`fixed_budget`, `patience`, `slope`") and "one result, not 3" in same
    assert fig is not None and fig.exists()


def _timed(workload, technique, seed, epochs, seconds):
    return {
        "workload": workload,
        "technique": technique,
        "variant": "default",
        "seed": seed,
        "epochs_to_target": epochs,
        "seconds_to_target": seconds,
        "censored_at": {"epochs": 20, "seconds": 40.0, "updates": 200},
    }


def test_performance_profiles_across_workloads(tmp_path):
    from techbench.report.profiles import profile_section

    runs = [_timed("w1", "fast", s, 2, 4.0) for s in range(3)] + [_timed("w1", "slow", s, 4, 8.0) for s in range(3)]
    runs += [_timed("w2", "fast", s, 3, 3.0) for s in range(3)] + [
        _timed("w2", "slow", s, None, None) for s in range(3)
    ]
    sec = profile_section(runs, tmp_path / "p.png", "t")
    rows = {r[0]: r[1:] for r in sec.tables[0].rows}
    assert rows["fast"] == ["1.000", "1.000", "2/2"]
    assert rows["slow"] == ["0.250", "0.250", "1/2"]  # 2x the fastest on w1: (log 4 − log 2)/log 4 / 2 workloads
    assert sec.figures[0].exists()
    assert profile_section([r for r in runs if r["workload"] == "w1"], tmp_path / "q.png", "t") is None


def _acc_rows(technique, variant, accs):
    return [{"technique": technique, "variant": variant, "seed": s, "test_acc": a} for s, a in enumerate(accs)]


def test_tuning_budgets_table_gain_over_one_shot_and_ranking_stability(tmp_path):
    from techbench.report.tuning import tuning_section

    default = {"a": [0.50, 0.52, 0.51], "b": [0.60, 0.61, 0.62], "c": [0.40, 0.41, 0.42]}
    small = {"a": [0.55, 0.56, 0.57], "b": [0.61, 0.62, 0.63], "c": [0.45, 0.46, 0.47]}
    large = {"a": [0.70, 0.71, 0.72], "b": [0.62, 0.63, 0.64], "c": [0.45, 0.46, 0.47]}

    def info(t):
        return {
            "optuna_study": f"s/{t}/h",
            "trials": 8,
            "pruned": 1,
            "budgets": {
                "small": {
                    "trials": 2,
                    "best_trial": 1,
                    "best_params": {"lr": 0.1},
                    "best_val_acc": 0.5,
                    "runs": _acc_rows(t, "tuned_small", small[t]),
                },
                "large": {
                    "trials": 8,
                    "best_trial": 6,
                    "best_params": {"lr": 0.05},
                    "best_val_acc": 0.6,
                    "runs": _acc_rows(t, "tuned_large", large[t]),
                },
            },
        }

    tuning = {t: info(t) for t in default}
    groups = {t: _acc_rows(t, "default", v) for t, v in default.items()}
    sec = tuning_section(tuning, groups, tmp_path / "tb.png", "s")
    table = sec.tables[0]
    assert table.headers[:5] == [
        "technique",
        "one_shot test acc %",
        "small test acc %",
        "small − one_shot (pp)",
        "small choice",
    ]
    row_a = table.rows[0]
    assert row_a[0] == "a" and row_a[3].startswith("5.00 ±") and row_a[6].startswith("20.00 ±")
    assert row_a[4] == "trial 1: lr=0.1 (val 50.0 %)"
    text = " ".join(sec.paragraphs)
    assert "small = 2 trials, large = 8 trials" in text
    assert "one_shot: b > a > c" in text and "large: a > b > c" in text
    assert "one_shot vs small τ = 1.00" in text and "one_shot vs large τ = 0.33" in text
    assert sec.figures[0].exists()
    # A summary written before budgets existed reads as one budget "tuned".
    old = {
        "a": {
            "optuna_study": "s/a/h",
            "trials": 4,
            "pruned": 0,
            "best_params": {"lr": 0.1},
            "best_val_acc": 0.5,
            "runs": _acc_rows("a", "tuned", small["a"]),
        }
    }
    assert tuning_section(old, groups, tmp_path / "old.png", "s").tables[0].headers[2] == "tuned test acc %"


def test_the_report_says_whether_the_baseline_converged():
    """Flat or rising validation loss in the last quarter is converged; a loss still falling 10 % is not, and
    the sentence says in how many seeds and by how much."""
    from techbench.analysis.convergence import convergence_line, tail_improvement

    rising = [1.0, 0.6, 0.5, 0.45, 0.44, 0.46, 0.5, 0.55]  # best of the last 2 epochs above the best before
    falling = [1.0, 0.8, 0.6, 0.5, 0.45, 0.42, 0.40, 0.378]  # last quarter's best 10 % below 0.42
    assert tail_improvement(rising) < 0 and tail_improvement(falling) == pytest.approx(0.1)
    assert tail_improvement([1.0, float("nan"), 0.5, 0.4]) is None  # a diverged curve is not judged
    done = convergence_line("adam", [{"curves": {"val/loss": rising}}] * 5)
    assert "converged within the budget in 5/5 seeds" in done
    mixed = convergence_line("sgd", [{"curves": {"val/loss": c}} for c in (rising, falling, falling)])
    assert "**not converged** in 2/3 seeds" in mixed and "still fell 10.0 %" in mixed
    assert convergence_line("single", [{"curves": {}}]) is None  # procedures have no curve
