"""Render each study's results as reports/<study>.md and all of them as one self-contained index.html, with
the speed measurements of `make bench`. Reads results/ through results.py only: no torch, techniques or probes."""

from __future__ import annotations

import json
from pathlib import Path

from techbench.errors import ConfigError
from techbench.report.claims import claims_of, claims_section
from techbench.report.document import Section, Table, to_html, to_markdown
from techbench.report.overview import overview_row, overview_section
from techbench.report.study_report import groups_of, report_comparisons, study_sections
from techbench.results import read_metrics, read_study, read_tuning
from techbench.results import studies as available_studies


def benchmarks_section(folder: Path) -> Section | None:
    """Speed measurements from `make bench` (benchmarks/results/*.json), shown as they were recorded."""
    files = sorted(folder.glob("*.json"))
    if not files:
        return None
    sec = Section("Benchmarks (`make bench`)")
    for f in files:
        data = json.loads(f.read_text())
        flat = {f"{k}.{j}" if isinstance(v, dict) else k: w for k, v in data.items() for j, w in _items(v)}
        rows = [[k, f"{v:.4g}" if isinstance(v, float) else str(v)] for k, v in flat.items()]
        sec.paragraphs.append(f"`{f.name}`")
        sec.tables.append(Table(["measure", "value"], rows))
    return sec


def overview_rows(results) -> list[list[str]]:
    comparisons = report_comparisons(results)
    out = []
    for w in results.workloads():
        groups = groups_of([r for r in results.runs if r["workload"] == w])
        row = overview_row(results, w, groups, comparisons, f"[{results.study}]({results.study}.md)")
        if row is not None:
            out.append(row)
    return out


def _items(value):
    """A measurement group (a dict) as its items; a single measurement as one item."""
    return value.items() if isinstance(value, dict) else [(None, value)]


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>techbench report</title><style>
body{{font-family:system-ui,sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:1em 0;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 7px}}
th{{background:#f3f3f3}}img{{max-width:100%}}code{{background:#f5f5f5;padding:0 3px}}</style></head><body>
<h1>techbench report</h1><p><a href="#overview">Overview</a>; <a href="#claims">the chapter's claims</a>;
studies: {toc}. Runs are in MLflow
(<code>mlflow ui --backend-store-uri sqlite:///mlflow.db</code>), tuning studies in Optuna (<code>optuna-dashboard sqlite:///optuna.db</code>).</p>
{body}</body></html>"""


def write_reports(
    results_root: Path,
    reports_dir: Path,
    benchmarks: Path,
    studies: list[str] | None = None,
    order: list[str] | None = None,
) -> list[Path]:
    """reports/<study>.md per study, reports/README.md (the overview) and reports/index.html (overview, then
    every study, then the benchmarks); studies in ``order`` (params.yaml's, which follows the chapter), the
    rest after them."""
    available = available_studies(results_root)
    for study in studies or []:
        if study not in available:
            raise ConfigError("study", f"no results for {study!r} yet: run `techbench run {study}` first", available)
    rank = {s: i for i, s in enumerate(order or [])}
    studies = sorted(studies or available, key=lambda s: (rank.get(s, len(rank)), s))
    figures = reports_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)  # probe views save into it directly
    written, bodies, rows, probe_only, decided = [], [], [], [], {}
    for study in studies:
        results = read_study(results_root, study)
        sections = study_sections(results, read_metrics(results_root, study), read_tuning(results_root, study), figures)
        md = reports_dir / f"{study}.md"
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(to_markdown(sections, reports_dir))
        written.append(md)
        bodies.append(f'<section id="{study}">' + to_html(sections) + "</section>")
        decided[study] = claims_of(sections)
        mine = overview_rows(results)
        rows += mine
        if not mine:
            probe_only.append(f"[{study}]({study}.md)")
    overview, claims = overview_section(rows, probe_only), claims_section(decided)
    reports_dir.mkdir(parents=True, exist_ok=True)  # also with no study results yet
    readme = reports_dir / "README.md"
    readme.write_text(to_markdown([overview, claims], reports_dir))
    verdicts = reports_dir / "claims.json"  # machine-readable: study -> its verdicts
    verdicts.write_text(json.dumps({s: [v.as_dict() for v in vs] for s, vs in decided.items() if vs}, indent=1))
    written[:0] = [readme, verdicts]
    bodies.insert(0, '<section id="overview">' + to_html([overview]) + "</section>")
    bodies.insert(1, '<section id="claims">' + to_html([claims]) + "</section>")
    bench = benchmarks_section(benchmarks)
    if bench is not None:
        bodies.append(to_html([bench]))
    toc = ", ".join(f'<a href="#{s}">{s}</a>' for s in studies) or "none"
    index = reports_dir / "index.html"
    index.write_text(PAGE.format(toc=toc, body="\n<hr>\n".join(bodies)))
    return [*written, index]
