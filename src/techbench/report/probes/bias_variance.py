"""View of bias_variance_poly (probes/bias_variance.py): test MSE, bias² and variance against the polynomial
degree, and whether the decomposition identity and claim C16's trends hold."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from techbench.report.claims import Verdict
from techbench.report.plots import plt
from techbench.report.probes.views import view

_RESOLVED_SE = 2.0  # a bias² estimate within this many standard errors of 0 is below Monte-Carlo resolution
_IDENTITY_TOL = 0.02  # the identity residual criterion (2 %)
_RHO_BIAS, _RHO_VAR = -0.8, 0.8  # claim C16: bias² falls and variance rises with the degree


def _by_degree(results: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """degree -> across-seed means of the row metrics, bias2_se combined as the SE of the mean, plus the
    largest identity residual of any seed."""
    got: dict[int, list[dict[str, Any]]] = {}
    for r in (r for res in results for r in res["rows"] if "degree" in r):
        got.setdefault(int(r["degree"]), []).append(r)
    out = {}
    for d in sorted(got):
        rs = got[d]
        k = len(rs)
        out[d] = {m: float(np.mean([r[m] for r in rs])) for m in ("test_mse", "bias2", "variance", "noise")}
        out[d]["bias2_se"] = math.sqrt(sum(r.get("bias2_se", 0.0) ** 2 for r in rs)) / k
        out[d]["max_residual"] = max(r["identity_residual"] for r in rs)
        out[d]["seeds"] = k
    return out


def _spearman(x: list[float], y: list[float]) -> float:
    if len(x) < 2 or len(set(y)) < 2:
        return float("nan")  # undefined for a constant series
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(x, y)[0])


def plot(results: list[dict[str, Any]], path: Path) -> Path | None:
    agg = _by_degree(results)
    if not agg:
        return None
    deg = list(agg)
    get = {m: np.array([agg[d][m] for d in deg]) for m in ("test_mse", "bias2", "variance", "noise", "bias2_se")}
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    ax.semilogy(deg, get["test_mse"], "o-", color="C3", label="test MSE")
    ax.semilogy(deg, get["variance"], "s-", color="C1", label="variance")
    b2 = np.where(get["bias2"] > 0, get["bias2"], np.nan)  # estimates ≤ 0 have no place on a log axis
    ax.semilogy(deg, b2, "-", color="C0", label="bias² (hollow: within 2 SE of 0)")
    ok = np.abs(get["bias2"]) >= _RESOLVED_SE * get["bias2_se"]
    for mask, face in ((ok, "C0"), (~ok, "none")):
        ax.semilogy(np.array(deg)[mask], b2[mask], "^", color="C0", markerfacecolor=face, ls="none")
    ax.semilogy(deg, _RESOLVED_SE * get["bias2_se"], ":", color="C0", alpha=0.6, label="bias² resolution (2 SE)")
    ax.axhline(float(get["noise"].mean()), ls="--", color="gray", label="σ² (irreducible)")
    k = max(agg[d]["seeds"] for d in deg)
    ax.set(xlabel="polynomial degree", ylabel="error", title=f"y = sin(2πx) + ε: bias-variance ({k} seed(s))")
    ax.set_xticks(deg)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def verdict(results: list[dict[str, Any]]) -> list[str]:
    agg = _by_degree(results)
    if not agg:
        return []
    deg = list(agg)
    k = max(a["seeds"] for a in agg.values())
    out = []
    worst = max(a["max_residual"] for a in agg.values())
    out.append(
        f"The identity test MSE = bias² + variance + σ² held to within {worst:.2%} (largest residual over "
        f"{len(deg)} degrees × {k} seed(s); criterion < {_IDENTITY_TOL:.0%}): "
        + ("it holds." if worst < _IDENTITY_TOL else "it does not hold to that tolerance.")
    )
    bias = [agg[d]["bias2"] for d in deg]
    var = [agg[d]["variance"] for d in deg]
    # An estimate within 2 SE of 0 carries no rank information; ranking it would rank Monte-Carlo noise.
    unresolved = [d for d in deg if abs(agg[d]["bias2"]) < _RESOLVED_SE * agg[d]["bias2_se"]]
    resolved = [0.0 if d in unresolved else agg[d]["bias2"] for d in deg]
    rho_raw, rho_b, rho_v = _spearman(deg, bias), _spearman(deg, resolved), _spearman(deg, var)
    ok = rho_b <= _RHO_BIAS and rho_v >= _RHO_VAR  # False for NaN
    tied = (
        f" ({len(unresolved)} estimate(s), at degree(s) {', '.join(map(str, unresolved))}, lie within 2 SE of 0 and "
        f"are ranked as tied at 0; on the raw estimates ρ(bias²) = {rho_raw:.2f})"
        if unresolved
        else ""
    )
    evidence = (
        f"Over degrees {deg[0]}…{deg[-1]}, Spearman ρ(bias², degree) = {rho_b:.2f}{tied} and ρ(variance, degree) "
        f"= {rho_v:.2f} (rule: ≤ {_RHO_BIAS:g} and ≥ {_RHO_VAR:g}: "
        + ("met" if ok else "not met")
        + f"); largest identity residual {worst:.2%} (rule: < {_IDENTITY_TOL:.0%})."
    )
    identity = worst < _IDENTITY_TOL
    out.append(Verdict("C16", "confirmed" if ok and identity else "refuted", evidence))
    best = min(deg, key=lambda d: agg[d]["test_mse"])
    out.append(
        f"The lowest test MSE, {agg[best]['test_mse']:.4g} (σ² = {agg[best]['noise']:.4g}), is at degree {best}; "
        f"from degree {deg[0]} to {deg[-1]} bias² goes {bias[0]:.3g} → {bias[-1]:.3g} ± {agg[deg[-1]]['bias2_se']:.2g} "
        f"(SE) and variance {var[0]:.3g} → {var[-1]:.3g}."
    )
    return out


view("bias_variance_poly", plot=plot, verdict=verdict)
