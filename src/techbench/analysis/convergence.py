"""Did a run train to convergence? A ranking at a budget where the baseline is still improving measures the
speed of the first epochs, not the techniques: the report says, for each study's baseline, whether its
validation loss had stopped falling by the end of the budget."""

from __future__ import annotations

import math
from typing import Any

TAIL = 0.25  # the last quarter of the epochs
TOLERANCE = 0.01  # a fall of the best validation loss by less than 1 % counts as flat


def tail_improvement(val_loss: list[float], tail: float = TAIL) -> float | None:
    """Relative fall of the best validation loss in the last ``tail`` of the epochs below the best before them:
    ≤ 0 when the loss was flat or rising at the end; None for curves too short to split."""
    finite = [v for v in val_loss if isinstance(v, (int, float)) and math.isfinite(v)]
    if len(finite) < 4 or len(finite) < len(val_loss):  # a diverged curve has no convergence to judge
        return None
    k = max(1, math.ceil(tail * len(finite)))
    before, last = min(finite[:-k]), min(finite[-k:])
    return (before - last) / abs(before) if before else None


def seed_falls(rows: list[dict[str, Any]]) -> list[float]:
    """Each judged seed's tail_improvement (curves too short or diverged left out)."""
    falls = [tail_improvement(r.get("curves", {}).get("val/loss", [])) for r in rows]
    return [f for f in falls if f is not None]


def convergence_line(label: str, rows: list[dict[str, Any]], tolerance: float = TOLERANCE) -> str | None:
    """One sentence on whether the configuration ``label`` converged in each of its seeds."""
    falls = seed_falls(rows)
    if not falls:
        return None
    flat = sum(f <= tolerance for f in falls)
    worst = max(falls)
    rule = (
        f"its best validation loss in the last {TAIL:.0%} of the epochs fell by at most {tolerance:.0%} below "
        "the best before them, or rose"
    )
    if flat == len(falls):
        return f"The baseline `{label}` converged within the budget in {flat}/{len(falls)} seeds ({rule})."
    return (
        f"The baseline `{label}` had **not converged** in {len(falls) - flat}/{len(falls)} seeds: {rule} in only "
        f"{flat}; in the worst seed it still fell {100 * worst:.1f} % in the last {TAIL:.0%}. Differences at this "
        "budget partly measure speed; a longer `train.epochs` would show whether they last."
    )
