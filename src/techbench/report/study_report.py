"""One study's report sections, built from its results (results.py) alone: the head, per workload "What the
numbers say" (the choice on validation, the comparisons with the baseline, the family's own findings, loaded by
the name its results carry) and then the setup, results tables, learning curves and sweep plot it rests on, then
the probes and the tuning budgets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from techbench.analysis.findings import Comparison, adjust, compare, describe
from techbench.analysis.rows import label
from techbench.report.claims import say
from techbench.report.document import Section
from techbench.report.families import FindingsContext, load
from techbench.report.plots import learning_curves, sweep_plot
from techbench.report.probes import probe_sections
from techbench.report.profiles import profile_section
from techbench.report.tables import results_tables, setup_lines
from techbench.report.tuning import tuning_section
from techbench.results import StudyResults

Groups = dict[str, list[dict[str, Any]]]


def groups_of(rows: list[dict[str, Any]]) -> Groups:
    out: Groups = {}
    for r in rows:
        out.setdefault(label(r), []).append(r)
    return out


def _head(results: StudyResults, workloads: list[str]) -> Section:
    head = Section(f"Study `{results.study}`")
    family = results.family
    if family:
        head.paragraphs.append(
            f"Family `{family['name']}` ({family['description']}): {len(results.techniques)} techniques on "
            f"{len(workloads)} workload(s) ({', '.join(f'`{w}`' for w in workloads)}). Cells are mean ± 95% "
            "Student-t CI half-width over seeds; rows are ordered by validation accuracy of the kept weights (what "
            "every choice is made on); gen. gap = train accuracy (eval mode, end) − test accuracy; best epoch = "
            "epoch of lowest validation loss (the monitor of restored weights); wall time = Lightning fit time per "
            "run; to target = Kaplan-Meier median over all seeds, a seed that never reached the target counted as "
            "censored at its full length."
        )
    return head


def _workload(
    results: StudyResults, w: str, bias_variance: dict, figures: Path, comparisons: list[Comparison]
) -> list[Section]:
    groups = groups_of([r for r in results.runs if r["workload"] == w])
    own = {k: c for k, c in results.configs.items() if c.get("workload") == w}
    machines = sorted({r.get("machine", "unknown") for rows in groups.values() for r in rows})
    sec = Section(f"Workload `{w}`", paragraphs=setup_lines(own, machines))
    if any(r.get("execution") == "vectorized" for rows in groups.values() for r in rows):
        sec.paragraphs.append(
            "Seeds of a configuration were trained together as one vectorized stack (`execution: vectorized`, "
            "the same numbers as one at a time): a run's wall time is the stack's fit time divided by its seeds."
        )
    columns = (results.family or {}).get("columns", [])
    sec.tables += results_tables(groups, columns)
    stem = figures / f"{results.study}_{w}"
    if any(r["curves"].get("val/loss") for rows in groups.values() for r in rows):  # procedures have none
        sec.figures.append(learning_curves(groups, stem.with_name(stem.name + "_curves.png"), f"{results.study} / {w}"))
    swept = sweep_plot(groups, stem.with_name(stem.name + "_sweep.png"), f"{results.study} / {w}")
    if swept is not None:
        sec.figures.append(swept)
    mine = [c for c in comparisons if c.workload == w]
    said = Section(f"What the numbers say (`{w}`)", paragraphs=describe(groups, mine, results.baselines.get(w)))
    findings = load((results.family or {}).get("findings"))
    if findings is not None:
        default = (results.family or {}).get("default")
        ctx = FindingsContext(stem, f"{results.study} / {w}", results.techniques, bias_variance.get(w, {}), default)
        lines, figs = findings(groups, ctx)
        say(said, lines)
        said.figures += figs
    return [said, sec]  # what the numbers say first, then the setup and tables they come from


def report_comparisons(results: StudyResults) -> list[Comparison]:
    """Every configuration against its workload's baseline on test accuracy, Holm-adjusted over all of them."""
    groups = {w: groups_of([r for r in results.runs if r["workload"] == w]) for w in results.workloads()}
    raw = [c for w, g in groups.items() if w in results.baselines for c in compare(w, g, results.baselines[w])]
    return adjust(raw, groups)


def study_sections(results: StudyResults, metrics: dict, tuning: dict, figures: Path) -> list[Section]:
    workloads = results.workloads()
    sections = [_head(results, workloads)]
    comparisons = report_comparisons(results)
    for w in workloads:
        sections += _workload(results, w, metrics.get("bias_variance", {}), figures, comparisons)
    across = profile_section(results.runs, figures / f"{results.study}_profiles.png", results.study)
    if across is not None:
        sections.append(across)
    family_across = load((results.family or {}).get("across"))
    if family_across is not None and (own := family_across(results, figures)) is not None:
        sections.append(own)
    sections += probe_sections(results.probes, figures, results.study)
    if tuning:
        first = workloads[0] if workloads else None
        sec = tuning_section(
            tuning,
            groups_of([r for r in results.runs if r["workload"] == first]),
            figures / f"{results.study}_tuning_budgets.png",
            results.study,
        )
        sec.paragraphs.append(f"Tuned and compared on the study's first workload, `{first}`.")
        sections.append(sec)
    return sections
