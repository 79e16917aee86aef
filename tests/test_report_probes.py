"""The report's probe sections and views: every probe that draws a plot or states a verdict has its view in
techbench.report.probes, and that package imports neither torch nor the probe code."""

from __future__ import annotations

import subprocess
import sys

import pytest

from techbench.report.probes import VIEWS, probe_sections, view

# The probes whose registration carried plot= and verdict= before both moved to the report.
WITH_VIEWS = {
    "backprop_cost",
    "bias_variance_poly",
    "forward_mode",
    "grad_accumulation",
    "grad_checkpointing",
    "gradient_check",
    "lr_range_test",
    "mixed_precision",
    "mode_connectivity",
    "per_example_loop",
    "quadratic_gd",
    "reverse_mode",
    "vectorized",
}


def test_every_probe_with_a_plot_or_verdict_has_a_view():
    from techbench.probes import PROBES

    names = set(PROBES.names())
    assert names >= WITH_VIEWS
    for name in WITH_VIEWS:
        assert name in VIEWS, name
        assert callable(VIEWS[name].plot) and callable(VIEWS[name].verdict), name
    # A view under a name no probe has would never be shown: a typo.
    assert set(VIEWS) <= names


def test_report_probes_imports_no_torch_and_no_probe_code():
    code = (
        "import sys, techbench.report.probes\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'techbench.probes', "
        "'techbench.techniques', 'techbench.training'))]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_a_view_is_registered_once():
    with pytest.raises(ValueError, match="twice"):
        view("lr_range_test")


def _lr_run(seed: int, suggested: float) -> dict:
    lrs = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    row = {"row": "lr_range_test", "suggested_lr": suggested, "steepest_lr": 2e-3, "min_loss_lr_div10": 1e-2}
    curves = {"lr_range_test": {"x": lrs, "loss": [1.4, 1.2, 0.8, 0.9, 3.0]}}
    return {"run_id": f"{seed:032x}", "seed": seed, "rows": [row], "curves": curves, "notes": ["a note"]}


def test_probe_sections_show_table_notes_verdict_and_plot(tmp_path):
    probes = {
        "lr_range_test": {"description": "LR range test", "hp": {"num_training": 5}, "runs": []},
        "no_view_probe": {"description": "a probe without a view", "runs": [_lr_run(0, 1e-3)]},
    }
    probes["lr_range_test"]["runs"] = [_lr_run(0, 1e-3), _lr_run(1, 4e-3)]
    lr, other = probe_sections(probes, tmp_path, "study")
    assert lr.title == "Probe `lr_range_test`" and lr.paragraphs[0] == "LR range test"
    assert lr.paragraphs[1].startswith("Settings: num_training=5; 2 seed(s); MLflow runs `00000000` `00000000`")
    assert "a note" in lr.paragraphs
    says = [p for p in lr.paragraphs if p.startswith("**What it says:** ")]
    assert says and "suggests an LR of 0.002 " in says[0]  # geometric mean of 1e-3 and 4e-3
    assert lr.tables[0].headers == ["row", "seeds", "suggested_lr", "steepest_lr", "min_loss_lr_div10"]
    assert lr.figures == [tmp_path / "study_lr_range_test.png"] and lr.figures[0].stat().st_size > 0
    # Without a view: still the table and notes, no verdict and no figure.
    assert other.tables and not other.figures
    assert not [p for p in other.paragraphs if p.startswith("**What it says:**")]
