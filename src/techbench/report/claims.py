"""The chapter's claims (claims.yaml, C01–C70) and their verdicts: a verdict function of a probe or a family
decides a claim by returning a ``Verdict`` among its sentences; the report states it where it was measured and
lists every claim, decided or not, in one summary after the overview."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

from techbench.report.document import Section, Table

OUTCOMES = ("confirmed", "refuted", "inconclusive")
CATALOG_FILE = Path(__file__).with_name("claims.yaml")


@cache
def catalog() -> dict[str, dict[str, str]]:
    """claim id -> its section, lines, quote, hypothesis, experiment and decision rule."""
    return {c["id"]: c for c in yaml.safe_load(CATALOG_FILE.read_text())}


class Verdict(str):
    """A claim decided by numbers: the outcome under the claim's decision rule and the numbers that decided it. It
    is also the sentence that states it, so verdict functions return it among their other sentences."""

    claim: str
    outcome: str
    evidence: str

    def __new__(cls, claim: str, outcome: str, evidence: str) -> Verdict:
        if claim not in catalog():
            raise ValueError(f"unknown claim {claim!r} (claims.yaml has C01–C70)")
        if outcome not in OUTCOMES:
            raise ValueError(f"claim {claim}: outcome {outcome!r} is not one of {OUTCOMES}")
        self = super().__new__(cls, f"Claim {claim} ({catalog()[claim]['quote']}): **{outcome}**. {evidence}")
        self.claim, self.outcome, self.evidence = claim, outcome, evidence
        return self

    def as_dict(self) -> dict[str, str]:
        return {"claim": self.claim, "outcome": self.outcome, "evidence": self.evidence}


def decide(claim: str, holds: bool, fails: bool, evidence: str) -> Verdict:
    """Confirmed when the rule's conditions hold, refuted when the numbers contradict it, else inconclusive."""
    return Verdict(claim, "confirmed" if holds else "refuted" if fails else "inconclusive", evidence)


def say(section: Section, items: list[Any], prefix: str = "") -> None:
    """Append a verdict function's sentences to ``section``; its Verdicts also join the section's claims."""
    for item in items:
        if isinstance(item, Verdict):
            section.claims.append(item)
        section.paragraphs.append(prefix + str(item))


def claims_of(sections: list[Section]) -> list[Verdict]:
    return [v for s in sections for v in s.claims]


def claims_section(decided: dict[str, list[Verdict]]) -> Section:
    """Every claim of the chapter, with the verdicts the studies (``decided``: study -> verdicts) gave it."""
    by_claim: dict[str, list[tuple[str, Verdict]]] = {}
    for study, verdicts in decided.items():
        for v in verdicts:
            by_claim.setdefault(v.claim, []).append((study, v))
    counts = {o: sum(v.outcome == o for vs in decided.values() for v in vs) for o in OUTCOMES}
    sec = Section("Claims")
    sec.paragraphs.append(
        f"The chapter's {len(catalog())} testable claims, each with its decision rule. {len(by_claim)} are decided by "
        f"the studies of this report ({counts['confirmed']} confirmed, {counts['refuted']} refuted, "
        f"{counts['inconclusive']} inconclusive verdicts; a claim decided on several workloads has one verdict "
        "each); the others name the experiment that would decide them. Each verdict applies the claim's own rule "
        "to the numbers stated with it; they are not corrected for the number of claims tested."
    )
    rows = []
    for cid, claim in catalog().items():
        where = f"{claim['section']} ({claim['lines']})"
        for study, v in by_claim.get(cid, []):
            rows.append([cid, where, claim["hypothesis"], f"**{v.outcome}**", v.evidence, f"[{study}]({study}.md)"])
        if cid not in by_claim:
            rows.append([cid, where, claim["hypothesis"], "not decided", "needs: " + claim["experiment"], "–"])
    sec.tables.append(Table(["claim", "section", "hypothesis", "verdict", "numbers", "study"], rows))
    return sec
