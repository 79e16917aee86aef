"""The chapter's claims in the report: the catalog holds C01–C70, a verdict function decides a claim under its own
rule, and the report lists every claim after the overview (decided ones with their numbers and study) and
writes reports/claims.json."""

from __future__ import annotations

import json

import pytest
from conftest import PROBE_SMOKE_HP

from techbench.report.claims import OUTCOMES, Verdict, catalog, claims_section
from techbench.report.probes import probe_sections
from techbench.report.probes.few_shot import verdict as few_shot_verdict


def test_the_catalog_holds_every_claim_with_its_rule():
    claims = catalog()
    assert list(claims) == [f"C{i:02d}" for i in range(1, 71)]
    for cid, c in claims.items():
        assert all(c[k] for k in ("section", "quote", "hypothesis", "experiment", "rule")), cid


def test_a_verdict_names_a_known_claim_and_outcome():
    v = Verdict("C59", "refuted", "−1.0 pp")
    assert v.startswith("Claim C59 (") and "**refuted**. −1.0 pp" in v and v.as_dict()["outcome"] == "refuted"
    with pytest.raises(ValueError, match="C71"):
        Verdict("C71", "confirmed", "")
    with pytest.raises(ValueError, match="supported"):
        Verdict("C01", "supported", "")


def _episodes(five_shot: list[float]) -> list[dict]:
    rows = lambda acc: [  # noqa: E731
        {"row": "5-way 1-shot, source embedding", "acc": acc - 0.1},
        {"row": "5-way 1-shot, raw input", "acc": 0.3},
        {"row": "5-way 5-shot, source embedding", "acc": acc},
        {"row": "5-way 5-shot, raw input", "acc": 0.4},
    ]
    return [{"run_id": f"{s:032x}", "seed": s, "rows": rows(a), "curves": {}} for s, a in enumerate(five_shot)]


@pytest.mark.parametrize(
    "accs, outcome",
    [([0.79, 0.80, 0.81], "confirmed"), ([0.95, 0.96, 0.97], "refuted"), ([0.6, 0.8, 1.0], "inconclusive")],
)
def test_c70_is_decided_on_5_way_5_shot_against_70_to_90_percent(accs, outcome):
    """The rule: the mean accuracy's CI within [70, 90] % confirms, entirely outside refutes, else inconclusive;
    the 1-shot rows are reported, not judged (the chapter gives no episode size)."""
    said = few_shot_verdict(_episodes(accs))
    verdicts = [s for s in said if isinstance(s, Verdict)]
    assert [(v.claim, v.outcome) for v in verdicts] == [("C70", outcome)]
    assert "5-way 5-shot" in verdicts[0].evidence and len(said) == 2


def test_probe_sections_collect_their_verdicts():
    probes = {"few_shot_prototypes": {"description": "episodes", "runs": _episodes([0.79, 0.80, 0.81])}}
    (sec,) = probe_sections(probes, None, "few_shot")
    assert [v.claim for v in sec.claims] == ["C70"]
    assert any(p.startswith("**What it says:** Claim C70") for p in sec.paragraphs)


def test_the_summary_lists_every_claim_once_undecided_or_with_each_verdict():
    decided = {"a": [Verdict("C70", "confirmed", "80 %")], "b": [Verdict("C70", "refuted", "95 %")]}
    sec = claims_section(decided)
    (table,) = sec.tables
    ids = [r[0] for r in table.rows]
    assert ids.count("C70") == 2 and all(ids.count(f"C{i:02d}") == 1 for i in range(1, 70))
    c70 = [r for r in table.rows if r[0] == "C70"]
    assert [r[3] for r in c70] == ["**confirmed**", "**refuted**"] and c70[0][5] == "[a](a.md)"
    c01 = next(r for r in table.rows if r[0] == "C01")
    assert c01[3] == "not decided" and c01[4].startswith("needs: QUAD d=50")
    assert "1 are decided" in sec.paragraphs[0] and "1 confirmed, 1 refuted, 0 inconclusive" in sec.paragraphs[0]
    assert set(OUTCOMES) == {"confirmed", "refuted", "inconclusive"}


def test_a_study_run_decides_its_claims_in_the_report(tmp_path):
    """A real run of a probe study (the quadratic probe decides C01 and C42): the report's README lists the
    claims after the overview, the study's page states them, claims.json holds them, and the Markdown table keeps
    its columns although hypotheses contain '|'."""
    from techbench.config import parse_params
    from techbench.report.render import write_reports
    from techbench.study import export_study, run_study
    from techbench.tracking import Tracker

    block = {"seeds": 1, "data": {"name": "debug"}, "model": {"name": "mlp"}}
    block["probes"] = {"quadratic_gd": PROBE_SMOKE_HP["quadratic_gd"]}
    params = parse_params({"studies": {"lr_stability": block}})
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_study(params, "lr_stability", tracker=tracker)
    export_study(params, "lr_stability", tracker=tracker, root=tmp_path / "results")
    write_reports(tmp_path / "results", tmp_path / "reports", tmp_path / "no-benchmarks")

    verdicts = json.loads((tmp_path / "reports" / "claims.json").read_text())["lr_stability"]
    assert [v["claim"] for v in verdicts] == ["C01", "C42"] and {v["outcome"] for v in verdicts} <= set(OUTCOMES)
    # c < 1 shrinks and c > 1 grows, but 300 steps at c = 1.01 (rate 1.02) stay short of the rule's 10³×
    assert verdicts[0]["outcome"] == "inconclusive" and "too slowly" in verdicts[0]["evidence"]
    readme = (tmp_path / "reports" / "README.md").read_text()
    assert readme.index("# Overview") < readme.index("## Claims")
    rows = [ln for ln in readme.splitlines() if ln.startswith("| C")]
    assert len(rows) == 70 and {ln.replace("\\|", "").count("|") for ln in rows} == {7}
    assert "| C01 |" in readme and "[lr_stability](lr_stability.md)" in readme
    assert "Claim C01 (" in (tmp_path / "reports" / "lr_stability.md").read_text()
    html = (tmp_path / "reports" / "index.html").read_text()
    assert html.index('id="overview"') < html.index('id="claims"') < html.index('id="lr_stability"')
