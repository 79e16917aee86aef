"""Performance profiles across workloads (Dolan & Moré 2002), as AlgoPerf scores training algorithms: for each
workload the time a technique needs to reach the workload's target, divided by the fastest technique's; the
profile ρ(τ) is the fraction of workloads on which a technique is within a factor τ of the fastest, and the
score is the area under ρ over log τ in [1, τ_max], divided by log τ_max (1 = fastest everywhere, 0 = never
reached a target within τ_max of the fastest). A technique that did not reach a target counts as infinitely slow."""

from __future__ import annotations

import math

TAU_MAX = 4.0  # AlgoPerf's r_max: beyond 4x the fastest a technique earns nothing on that workload


def ratios(times: dict[str, dict[str, float | None]]) -> dict[str, dict[str, float]]:
    """workload -> label -> time / fastest time on that workload (inf where unreached); only the labels that
    run on every workload, so each profile is over the same workloads."""
    common = set.intersection(*(set(t) for t in times.values())) if times else set()
    out: dict[str, dict[str, float]] = {}
    for w, per in times.items():
        reached = [t for lab, t in per.items() if lab in common and t is not None and t > 0]
        best = min(reached) if reached else None
        out[w] = {lab: (per[lab] / best if best and per[lab] is not None else math.inf) for lab in sorted(common)}
    return out


def profile(r: dict[str, dict[str, float]], label: str, tau: float) -> float:
    """ρ(τ): the fraction of workloads on which ``label`` is within a factor ``tau`` of the fastest."""
    return sum(per[label] <= tau for per in r.values()) / len(r)


def score(r: dict[str, dict[str, float]], label: str, tau_max: float = TAU_MAX) -> float:
    """The area under ρ over log τ ∈ [1, τ_max], normalized: exact, since ρ is a step function of τ."""
    total = 0.0
    for per in r.values():
        x = per[label]
        if x <= tau_max:
            total += (math.log(tau_max) - math.log(max(x, 1.0))) / math.log(tau_max)
    return total / len(r)
