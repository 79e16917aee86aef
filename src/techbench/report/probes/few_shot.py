"""View of few_shot_prototypes (probes/few_shot.py): accuracy per shot count in the source embedding and on the raw
inputs, the embedding's gain paired over seeds, and the chapter's "often 70-90 %" (C70) against the CI."""

from __future__ import annotations

from typing import Any

from techbench.analysis.stats import mean_ci, paired_diff_ci
from techbench.report.claims import Verdict
from techbench.report.probes.views import seed_values, view

EMBEDDING, RAW = "source embedding", "raw input"


def verdict(results: list[dict[str, Any]]) -> list[str]:
    rows = list(dict.fromkeys(r["row"] for res in results for r in res["rows"] if r["row"].endswith(EMBEDDING)))
    out = []
    for row in rows:
        emb = seed_values(results, row)
        raw = seed_values(results, row.replace(EMBEDDING, RAW))
        est, gain = mean_ci(list(emb.values())), paired_diff_ci(emb, raw)
        where = (
            "within the chapter's 70-90 %"
            if est.low >= 0.7 and est.high <= 0.9
            else "above the chapter's 70-90 %"
            if est.low > 0.9
            else "below the chapter's 70-90 %"
            if est.high < 0.7
            else "overlapping the chapter's 70-90 % range"
        )
        sentence = (
            f"{row.split(',')[0]}: {est.fmt(100, 1)} % with the source embedding ({where}; CI over {est.n} seeds, "
            f"each the mean of its own episodes drawn from one source model), {gain.fmt(100, 1)} pp over prototypes "
            "on the raw inputs (paired by seed)."
        )
        if not row.startswith(C70_EPISODES):
            out.append(sentence)
            continue
        inside, outside = est.low >= 0.7 and est.high <= 0.9, est.low > 0.9 or est.high < 0.7
        out.append(Verdict("C70", "confirmed" if inside else "refuted" if outside else "inconclusive", sentence))
    return out


C70_EPISODES = "5-way 5-shot"  # the claim's setting; the chapter gives no episode size, so 1-shot is only reported


view("few_shot_prototypes", verdict=verdict)
