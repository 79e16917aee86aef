"""The report's first section: per study and workload, the question and the answer in one line — the configuration
chosen on validation, its test accuracy against the study's baseline (paired difference, Holm-adjusted over the
study, with its interval) and whether the baseline converged — with a link to the details."""

from __future__ import annotations

from typing import Any

from techbench.analysis.convergence import TOLERANCE, seed_falls
from techbench.analysis.findings import Comparison, chosen_on_validation
from techbench.analysis.stats import mean_ci
from techbench.report.document import Section, Table
from techbench.results import StudyResults

Groups = dict[str, list[dict[str, Any]]]
HEADERS = ["study", "question", "workload", "chosen on validation", "test acc %", "vs baseline (pp, Holm p)", "seeds"]


def _acc(rows: list[dict[str, Any]]) -> str:
    return mean_ci([r["test_acc"] for r in rows if r.get("test_acc") is not None]).fmt(100)


def _converged(rows: list[dict[str, Any]]) -> str:
    falls = seed_falls(rows)
    if not falls:
        return ""
    flat = sum(f <= TOLERANCE for f in falls)
    return "" if flat == len(falls) else f"; baseline not converged in {len(falls) - flat}/{len(falls)} seeds"


def overview_row(
    results: StudyResults, workload: str, groups: Groups, comparisons: list[Comparison], link: str
) -> list[str] | None:
    best = chosen_on_validation(groups)
    if best is None:
        return None
    baseline = results.baselines.get(workload)
    against = "–"
    if baseline and best == baseline:
        against = "is the baseline"
    else:
        c = next((c for c in comparisons if c.workload == workload and c.label == best), None)
        if c is not None:
            against = f"{c.diff.fmt(100)} vs `{baseline}` (p={c.p:.2g})"
    if baseline in groups:
        against += _converged(groups[baseline])
    question = (results.family or {}).get("description", "measurements (probes)")
    n = min(len(rows) for rows in groups.values())
    return [link, question, f"`{workload}`", f"**{best}**", _acc(groups[best]), against, str(n)]


def overview_section(rows: list[list[str]], probe_only: list[str]) -> Section:
    sec = Section("Overview")
    sec.paragraphs.append(
        "Per study and workload: the configuration with the highest mean validation accuracy of its kept weights "
        "(every choice is made on validation), its test accuracy (mean ± 95% CI over seeds) and its paired "
        "difference from the study's baseline on test (interval Bonferroni-matched, p Holm-adjusted over all of "
        "the study's comparisons). Details, every other configuration and the chapter's finer questions: each "
        "study's section."
    )
    sec.tables.append(Table(HEADERS, rows))
    if probe_only:
        sec.paragraphs.append("Measurement-only studies (probes, no ranking): " + ", ".join(probe_only) + ".")
    return sec
