"""`dvc repro` of a shrunken copy of the real pipeline in a temporary git + DVC repository: the stages
run, the runs are read back through MlflowClient, the reports and DVC metrics/plots exist, and a second
`dvc repro` trains nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from browser import VIEWPORT, open_page
from conftest import PROBE_SMOKE_HP

ROOT = Path(__file__).resolve().parents[1]


def _sh(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture
def repo(tmp_path):
    for name in ("dvc.yaml", "params.yaml", "pipelines", "src", "benchmarks", ".gitignore"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    # The real file, shrunk: same studies and stages, debug workload, a few epochs, techniques, sweep points,
    # seeds and trials; probes at their smoke-test sizes.
    for name, study in params["studies"].items():
        tuned = (params.get("tuning", {}).get(name) or {}).get("techniques", [])[:1]
        study.pop("workloads", None)
        study.pop("baseline", None)  # its technique or sweep point may be shrunk away: the default baseline
        data = {"name": "debug"}
        if study.get("family") == "adaptation":  # a shifted debug domain
            data = {"name": "domain_shift", "source": data, "target": {"noise": 0.9, "data_seed": 1}}
        study.update(data=data, model={"name": "mlp", "hidden": [16]}, seeds=2)
        study["train"] = {"epochs": 3, "batch_size": 32, "target_val_acc": 0.5}
        dropped = set()
        if "techniques" in study:
            keep = study["techniques"][:1] + tuned + study["techniques"][1:2]
            dropped = set(study["techniques"]) - set(keep)
            study["techniques"] = list(dict.fromkeys(keep))[:2]
            given = study.get("technique_params") or {}
            kept = {t: {**hp, "epochs": 2} if "epochs" in hp else hp for t, hp in given.items()}
            study["technique_params"] = {t: hp for t, hp in kept.items() if t in study["techniques"]}
        # Sweep axes of techniques no longer in the study go with them.
        sweep = {a: v[:2] for a, v in (study.get("sweep") or {}).items() if a.split(".")[0] not in dropped}
        study.pop("sweep", None)
        if sweep:
            study["sweep"] = sweep
        if "probes" in study:
            study["probes"] = {p: PROBE_SMOKE_HP.get(p, {}) for p in study["probes"]}
    # The source models and transfer studies, shrunk the same way: a tiny CNN source, one target workload.
    for source in params["pretrain"].values():
        base = {"classes": [0, 1]} if "classes" in source["data"] else {}  # a base-class source stays one
        source.update(data={"name": "debug", **base}, model={"name": "cnn1d", "channels": 4}, train={"epochs": 2})
    for study in params["transfer"].values():
        study.pop("workloads", None)
        study.pop("sweep", None)
        study.pop("baseline", None)
        study.update(data={"name": "debug", "noise": 0.7, "data_seed": 1}, seeds=2, train={"epochs": 2})
        if "model" in study:  # a student of its source: the strategies with a teacher
            study["model"] = {"name": "mlp", "hidden": [8]}
            study["techniques"] = ["scratch", "knowledge_distillation"]
        elif "techniques" in study:
            study["techniques"] = ["scratch", "feature_extraction"]
        if "probes" in study:
            study["probes"] = {p: PROBE_SMOKE_HP.get(p, {}) for p in study["probes"]}
    for budget in params["tuning"].values():
        budget.update(techniques=budget["techniques"][:1])
        budget.update(budgets={"small": 2, "large": 3}) if "budgets" in budget else budget.update(trials=3)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("OPTUNA_STORAGE", None)
    _sh(["git", "init", "-q"], tmp_path, env)
    _sh(["dvc", "init", "-q"], tmp_path, env)
    # The project's DVC settings and plot templates (the offline page is written by `make install`).
    shutil.copy(ROOT / ".dvc" / "config", tmp_path / ".dvc" / "config")
    shutil.copy(ROOT / ".dvc" / ".gitignore", tmp_path / ".dvc" / ".gitignore")
    shutil.copytree(ROOT / ".dvc" / "plots", tmp_path / ".dvc" / "plots")
    _sh(["git", "add", "-A"], tmp_path, env)
    _sh(["git", "commit", "-qm", "init"], tmp_path, env)
    return tmp_path, params, env


@pytest.mark.slow
def test_dvc_repro_end_to_end(repo):
    from mlflow.tracking import MlflowClient

    path, params, env = repo
    _sh(["dvc", "repro"], path, env)

    client = MlflowClient(tracking_uri=f"sqlite:///{path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("optimizers")
    runs = client.search_runs([exp.experiment_id], "tags.variant = 'default' AND tags.kind = 'run'")
    techniques = params["studies"]["optimizers"]["techniques"]
    expected = sorted(f"{t}/debug_mlp/seed{s}" for t in techniques for s in (0, 1))
    assert sorted(r.info.run_name for r in runs) == expected
    assert all(r.info.status == "FINISHED" for r in runs)

    metrics = json.loads((path / "results/optimizers/metrics.json").read_text())
    assert set(metrics["debug_mlp"]) == set(techniques)
    assert all(m["n"] == 2 for m in metrics["debug_mlp"].values())
    tuning = json.loads((path / "results/optimizers/tuning.json").read_text())
    first = params["tuning"]["optimizers"]["techniques"][0]
    assert list(tuning) == [first] and tuning[first]["trials"] == 3 and len(tuning[first]["runs"]) == 2
    assert [b["trials"] for b in tuning[first]["budgets"].values()] == [2, 3]

    md = (path / "reports/optimizers.md").read_text()
    for t in techniques:
        assert f"| {t} | 2 |" in md
    assert "## What the numbers say (`debug_mlp`)" in md and "## Tuning budgets" in md
    assert (path / "reports/figures/optimizers_debug_mlp_curves.png").stat().st_size > 10_000
    html = (path / "reports/index.html").read_text()
    assert "data:image/png;base64," in html and "http" not in html.split("<body>")[0]
    # The page opens with the overview and the chapter's claims, then the studies in params.yaml's order.
    sections = [part.split('"', 1)[0] for part in html.split('<section id="')[1:]]
    assert sections == ["overview", "claims", *params["studies"], *params["transfer"]]
    overview = (path / "reports/README.md").read_text()
    assert overview.startswith("# Overview") and "[optimizers](optimizers.md)" in overview
    assert "chosen on validation" in overview and "| `debug_mlp` | **" in overview

    # Every study is a stage with a report; probes run once per seed and appear with their tables.
    for name, study in {**params["studies"], **params["transfer"]}.items():
        md = (path / f"reports/{name}.md").read_text()
        probes = json.loads((path / f"results/{name}/probes.json").read_text())
        assert set(probes) == set(study.get("probes", {}))
        for probe, info in probes.items():
            assert len(info["runs"]) == 2 and all(run["rows"] for run in info["runs"])
            assert f"## Probe `{probe}`" in md
    swept = (path / "reports/lr_stability.md").read_text()
    assert "sgd@lr=" in swept

    shown = _sh(["dvc", "metrics", "show", "--json"], path, env).stdout
    assert "test_acc_mean" in shown
    _sh(["dvc", "plots", "show", "-o", str(path / "plots_html")], path, env)
    page = (path / "plots_html" / "index.html").read_text()
    # Offline: the libraries are inlined, nothing is loaded from a network; one overlay figure per study and
    # workload, every configuration of the workload in it.
    assert "<script src=" not in page and "vega@5.20.2" in page and "vega-embed@6.18.2" in page
    trained = [n for n, st in {**params["studies"], **params["transfer"]}.items() if "techniques" in st]
    assert page.count("vegaEmbed('#") == len(trained)  # a study of probes only has no curves
    assert '"config": "' + params["studies"]["optimizers"]["techniques"][1] + '"' in page
    _pages_in_a_real_browser(path, n_figures=len(trained))

    # Nothing changed: no stage runs, no new MLflow run.
    n_runs = len(client.search_runs([exp.experiment_id]))
    again = _sh(["dvc", "repro"], path, env).stdout
    assert "didn't change" in again or "up to date" in again.lower()
    assert len(client.search_runs([exp.experiment_id])) == n_runs
    _fresh_clone_runs_into_its_own_stores(path, env, n_runs)


def _pages_in_a_real_browser(path: Path, n_figures: int) -> None:
    """Both HTML pages in headless Chromium: no console error, no request beyond the page itself (offline),
    something drawn; the report's first section is the overview, at the top of the first screen."""
    report = open_page(path / "reports/index.html", path / "report.png")
    assert report.errors == [], report.errors
    assert report.requests == [(path / "reports/index.html").resolve().as_uri()]
    assert report.first_section == "overview" and report.first_section_top < VIEWPORT["height"] / 3
    assert report.screenshot_colours > 16  # text and tables, not a blank page
    plots = open_page(path / "plots_html/index.html", path / "plots.png", expect_figures=n_figures)
    assert plots.errors == [], plots.errors
    assert plots.requests == [(path / "plots_html/index.html").resolve().as_uri()]
    assert plots.rendered_figures == n_figures and plots.screenshot_colours > 16


def _fresh_clone_runs_into_its_own_stores(path: Path, env: dict, n_runs: int) -> None:
    """Results and reports committed as a user commits them: a clone has no mlflow.db and no optuna.db, so
    nothing may look done there. `dvc exp run --temp` runs stages in a throwaway copy under
    .dvc/tmp/exps; its runs and trials must land in the clone's own stores."""
    import optuna
    from mlflow.tracking import MlflowClient

    assert optuna.get_all_study_summaries(f"sqlite:///{path / 'optuna.db'}")
    _sh(["git", "add", "-A"], path, env)
    _sh(["git", "commit", "-qm", "results"], path, env)
    clone = path.parent / "clone"
    _sh(["git", "clone", "-q", str(path), str(clone)], path.parent, env)
    assert not (clone / "optuna.db").exists() and not (clone / "mlflow.db").exists()
    # The optimizers study and its tuning stand for every stage (the stores are per project, not per stage).
    _sh(["dvc", "exp", "run", "--temp", "study@optimizers", "tune@optimizers"], clone, env)
    studies = optuna.get_all_study_summaries(f"sqlite:///{clone / 'optuna.db'}")
    assert studies and all(s.n_trials > 0 for s in studies)
    client = MlflowClient(tracking_uri=f"sqlite:///{clone / 'mlflow.db'}")
    exp = client.get_experiment_by_name("optimizers")
    assert len(client.search_runs([exp.experiment_id])) == n_runs
    assert not list((clone / ".dvc").rglob("*.db"))
