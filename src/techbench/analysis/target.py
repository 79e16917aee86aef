"""Time to target over all of a configuration's seeds: the fraction that reached the target validation accuracy
and the Kaplan-Meier median of epochs, updates or seconds, in which a seed that never reached it counts as
right-censored at its full length instead of being left out (which would flatter a technique that often fails)."""

from __future__ import annotations

from typing import Any

from techbench.analysis.stats import censored_median

UNITS = {"epochs": "epochs_to_target", "updates": "updates_to_target", "seconds": "seconds_to_target"}


def to_target(rows: list[dict[str, Any]], unit: str) -> tuple[int, int, float | None]:
    """(seeds that reached the target, seeds with a time, censored median of ``unit``); rows of a workload without
    a target are skipped."""
    times, reached = [], []
    for r in rows:
        if "epochs_to_target" not in r:
            continue
        hit = r["epochs_to_target"] is not None
        t = r.get(UNITS[unit]) if hit else (r.get("censored_at") or {}).get(unit)
        if t is not None:
            times.append(float(t))
            reached.append(hit)
    return sum(reached), len(times), censored_median(times, reached)


def fmt_target(rows: list[dict[str, Any]], unit: str, digits: int = 1) -> str:
    """ "median (k/n reached)"; "not reached by half" when the censored median is undefined."""
    k, n, median = to_target(rows, unit)
    if n == 0:
        return "–"
    shown = f"{median:.{digits}f}" if median is not None else "> half unreached"
    return f"{shown} ({k}/{n} reached)"
