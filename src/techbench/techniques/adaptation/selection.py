"""Model selection for domain adaptation, four rules side by side, none of which reads a target test label.

Each rule picks one epoch of a run from its per-epoch validation curves; the target test accuracy reported
for the rule is the one measured on the weights of that epoch:
  source_val  highest source validation accuracy (what a user without target labels can do)
  target_val  highest target validation accuracy: the ORACLE (it needs labelled target data)
  last        the last epoch (a fixed training budget)
  entropy     lowest mean prediction entropy on target validation inputs (unsupervised: no labels)
"""

from __future__ import annotations

import math

RULES = {"source_val": ("val/acc", max), "target_val": ("target/val_acc", max), "entropy": ("target/val_entropy", min)}
ALL_RULES = ("source_val", "target_val", "last", "entropy")
ORACLE = "target_val"


def chosen_epoch(curves: dict[str, list[float]], rule: str) -> int | None:
    """The 0-based epoch a rule picks (the first of ties), from validation curves only; None without values."""
    n = len(curves.get("target/test_acc", []))
    if rule == "last":
        return n - 1 if n else None
    key, best = RULES[rule]
    finite = [(v, i) for i, v in enumerate(curves.get(key, [])[:n]) if math.isfinite(v)]
    if not finite:
        return None
    pick = best(v for v, _ in finite)
    return next(i for v, i in finite if v == pick)


def selected(curves: dict[str, list[float]]) -> dict[str, float]:
    """Per rule: the epoch it picks (1-based) and the target test accuracy of that epoch's weights."""
    out = {}
    for rule in ALL_RULES:
        e = chosen_epoch(curves, rule)
        if e is not None:
            out[f"select/{rule}/epoch"] = float(e + 1)
            out[f"select/{rule}/test_acc"] = float(curves["target/test_acc"][e])
    return out
