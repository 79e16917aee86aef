"""Gradient descent on quadratics with a known spectrum: the chapter's "α > 2/λmax diverges" bound (claim C01)
and the iteration counts of GD vs heavy-ball vs Nesterov as the condition number grows (claim C42).

J(w) = ½ wᵀHw, so w* = 0 and the error along eigenvector i is multiplied by (1 − αλᵢ) each GD step: the
predicted per-step rate is max|1 − αλᵢ| (for momentum methods, the spectral radius of the 2×2 recurrence).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from techbench.probes import PROBES, ProbeContext, ProbeResult

_BLOWUP = 1e12  # ‖w‖ past this (from ‖w0‖ = 1) counts as diverged; the run stops there
_TINY = 1e-100  # converged runs stop here, well before float64 underflow would distort the measured rate
_MAX_POINTS = 200  # per curve, so MLflow metric histories stay small


def quadratic_problems(d: int, kappas: list[float], lam_max: float, seed: int) -> list[tuple[np.ndarray, ...]]:
    """(H, eigenvalues, x0) per κ: H = Q diag(λ) Qᵀ, λ log-spaced in [λmax/κ, λmax], Q Haar, ‖x0‖ = 1."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for kappa in kappas:
        lam = lam_max * np.logspace(-math.log10(kappa), 0.0, d)
        q, r = np.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64).numpy())
        q = q * np.sign(np.diag(r))  # the sign fix makes Q Haar-distributed
        z = torch.randn(d, generator=gen, dtype=torch.float64).numpy()
        # A random unit x0 has only ~1/√d on the top eigenvector; a floor keeps the unstable mode clearly
        # present, so divergence for c > 1 never hinges on round-off seeding it.
        z[-1] = math.copysign(max(abs(z[-1]), 1.0), z[-1])
        h, x0 = (q * lam) @ q.T, q @ z
        out.append(((h + h.T) / 2, lam, x0 / np.linalg.norm(x0)))
    return out


def digits_problem() -> tuple[np.ndarray, ...]:
    """Least squares on scikit-learn's bundled digits: H = XᵀX/m (standardized X), x0 = w0 − w* with w0 = 0."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = x[:, x.std(0) > 0]  # constant pixels would make H singular and w* non-unique
    x = (x - x.mean(0)) / x.std(0)
    h = x.T @ x / len(x)
    h = (h + h.T) / 2
    w_star = np.linalg.solve(h, x.T @ (y - y.mean()) / len(x))
    # The gradient is H(w − w*), so iterating on the error is the same GD without the ~1e-16 floor that
    # subtracting a computed w* would put under the distance.
    return h, np.linalg.eigvalsh(h), -w_star


def spectral_radius(lam: np.ndarray, alpha: float, m: float = 0.0, b: float = 0.0) -> float:
    """Rate of w+ = w + m(w − w−) − αH(w + b(w − w−)): GD (m=b=0), heavy ball (b=0), Nesterov (m=b)."""
    p = 1 + m - alpha * lam * (1 + b)
    s = np.sqrt((p * p - 4 * (m - alpha * lam * b)).astype(complex))
    return float(np.max(np.maximum(abs((p + s) / 2), abs((p - s) / 2))))


def iterate(h, x0, alpha, m=None, b=None, steps: int = 1, stop_below: float = _TINY) -> dict[str, np.ndarray]:
    """w+ = w + m(w − w−) − αH(w + b(w − w−)) from x0 for problems h (K,d,d), x0 (K,d) and (K,C) arrays α, m, b
    (m = b = 0: plain GD), all at once; a run stops when ‖w‖/‖w0‖ < stop_below or > _BLOWUP. Returns rel
    ((steps+1,K,C) ‖w_t‖/‖w_0‖, NaN after a stop), steps_run, diverged_step (-1 if not), the last w, final rel.
    NumPy, not torch: per-op overhead on these tiny arrays is ~10× lower, and the loop is sequential."""
    k, c = alpha.shape
    # Copies: a stopped run is frozen by zeroing its α and m (then w+ = w) instead of masking every step.
    alpha = alpha[..., None].copy()
    m = np.zeros((k, c, 1)) if m is None else m[..., None].copy()
    b = np.zeros((k, c, 1)) if b is None else b[..., None]
    w = np.repeat(x0[:, None, :], c, axis=1)
    w_prev, n0 = w, np.linalg.norm(x0, axis=-1)[:, None]
    rel = np.ones((steps + 1, k, c))  # row t is written at step t; row 0 is ‖w0‖/‖w0‖
    active, steps_run, div = np.ones((k, c), bool), np.full((k, c), steps), np.full((k, c), -1)
    for t in range(1, steps + 1):
        v = w - w_prev
        w_prev, w = w, w + m * v - alpha * ((w + b * v) @ h)  # H is symmetric, so the rows of yH are Hy
        rel[t] = r = np.sqrt(np.einsum("kcd,kcd->kc", w, w)) / n0
        stop = active & ~((r <= _BLOWUP) & (r >= stop_below))  # the negated form also catches inf/NaN
        if stop.any():
            blown = stop & ~(r < _BLOWUP)
            div[blown], steps_run[stop], alpha[stop], m[stop] = t, t, 0.0, 0.0
            active &= ~stop
            if not active.any():
                break
    rel = rel[: steps_run.max() + 1]
    rel[np.arange(len(rel))[:, None, None] > steps_run] = np.nan
    final = np.linalg.norm(w, axis=-1) / n0  # w stayed put where a run stopped
    return {"rel": rel, "steps_run": steps_run, "diverged_step": div, "w": w, "final": final}


def _rate(rel: np.ndarray, t0: int, t1: int) -> float:
    """Measured per-step contraction between steps t0 < t1 (−1 if there is no such window)."""
    return float((rel[t1] / rel[t0]) ** (1.0 / (t1 - t0))) if 0 <= t0 < t1 else -1.0


def _tuned_alpha(lam: np.ndarray, m: float, b: float) -> float:
    """Step size minimizing the predicted rate at fixed momentum (grid; middle of any flat optimum)."""
    grid = np.geomspace(1e-3, 4.0, 3000) / lam.max()
    rates = np.array([spectral_radius(lam, a, m, b) for a in grid])
    best = np.flatnonzero(rates <= rates.min() + 1e-12)
    return float(grid[best[len(best) // 2]])


def _methods(lam: np.ndarray, momentum: float) -> dict[str, tuple[float, float, float]]:
    """method -> (α, m, b): GD and the classical optimal heavy-ball / Nesterov, plus both at fixed momentum."""
    mu, lmax = lam.min(), lam.max()
    sk = math.sqrt(lmax / mu)
    q = (sk - 1) / (sk + 1)
    return {
        "gd": (2 / (mu + lmax), 0.0, 0.0),
        "heavy_ball": (4 / (math.sqrt(lmax) + math.sqrt(mu)) ** 2, q * q, 0.0),
        "nesterov": (1 / lmax, q, q),
        f"heavy_ball(m={momentum:g})": (_tuned_alpha(lam, momentum, 0.0), momentum, 0.0),
        f"nesterov(m={momentum:g})": (_tuned_alpha(lam, momentum, momentum), momentum, momentum),
    }


def _tol_name(tol: float) -> str:
    return "iters_to_" + f"{tol:.0e}".replace("e-0", "e-").replace("e+0", "e")


def _sweep_rows(label: str, kappa: float, lam: np.ndarray, cs: list[float], alphas, res: dict, i: int, rows, curves):
    for j, c in enumerate(cs):
        s, rel, div = int(res["steps_run"][i, j]), res["rel"][:, i, j], int(res["diverged_step"][i, j])
        measured = _rate(rel, s // 2, s)  # second half: the slowest present mode dominates by then
        rows.append(
            {
                "row": f"gd {label} c={c}",
                "kappa": float(kappa),
                "c": float(c),
                "alpha": float(alphas[i, j]),
                "final_rel_dist": float(rel[s]),
                "log10_final_rel_dist": float(np.log10(rel[s])),
                "steps_run": s,
                "diverged": int(div >= 0),
                "diverged_step": div,
                "predicted_rate": spectral_radius(lam, float(alphas[i, j])),
                "measured_rate": measured,
                "verdict": "diverges" if div >= 0 or measured > 1 else "converges",
            }
        )
        pts = np.unique(np.round(np.geomspace(1, max(s, 1), _MAX_POINTS - 1)).astype(int))
        curves[f"{label} c={c}"] = {"x": [0.0, *pts.astype(float)], "rel_dist": [1.0, *rel[pts].tolist()]}


@PROBES.register(
    "quadratic_gd",
    description="GD on ½wᵀHw with known spectrum: divergence at α = c·2/λmax, and GD vs heavy ball vs Nesterov",
    defaults={
        "d": 50,
        "kappa_values": [10, 100, 10000],
        "lam_max": 1.0,
        "c_values": [0.5, 0.9, 0.99, 1.01, 1.1],
        "steps": 10_000,
        "momentum": 0.9,
        "tol": 1e-6,
        "max_iters": 200_000,
        "digits": 1,
    },
    topic="lr_stability",
)
def quadratic_gd(ctx: ProbeContext, *, d, kappa_values, lam_max, c_values, steps, momentum, tol, max_iters, digits):
    start = time.perf_counter()
    rows, curves = [], {}
    probs = quadratic_problems(d, kappa_values, lam_max, ctx.seed)
    h, x0 = np.stack([p[0] for p in probs]), np.stack([p[2] for p in probs])
    alphas = np.array([[2.0 * c / lam.max() for c in c_values] for _, lam, _ in probs])
    res = iterate(h, x0, alphas, steps=steps)
    for i, (kappa, (_, lam, _)) in enumerate(zip(kappa_values, probs, strict=True)):
        _sweep_rows(f"kappa={kappa:g}", kappa, lam, c_values, alphas, res, i, rows, curves)
    if digits:
        hd, lam_d, x0_d = digits_problem()
        a_d = np.array([[2.0 * c / lam_d.max() for c in c_values]])
        res_d = iterate(hd[None], x0_d[None], a_d, steps=steps)
        _sweep_rows("digits", lam_d.max() / lam_d.min(), lam_d, c_values, a_d, res_d, 0, rows, curves)

    methods = [_methods(lam, momentum) for _, lam, _ in probs]
    names = list(methods[0])
    coef = np.array([[list(mk[n]) for n in names] for mk in methods])  # (K, M, 3): α, m, b
    res = iterate(h, x0, coef[..., 0], coef[..., 1], coef[..., 2], steps=max_iters, stop_below=tol)
    hit = np.where(res["final"] < tol, res["steps_run"], -1)
    for i, (kappa, (_, lam, _)) in enumerate(zip(kappa_values, probs, strict=True)):
        for j, name in enumerate(names):
            a, m, b = coef[i, j]
            pred = spectral_radius(lam, a, m, b)
            rel = res["rel"][:, i, j]
            # From first reaching √tol on: skips the start-up transient, momentum's included.
            half = int(np.argmax(rel <= math.sqrt(tol))) if hit[i, j] > 0 else -1
            rows.append(
                {
                    "row": f"{name} kappa={kappa:g}",
                    "kappa": float(kappa),
                    "method": name,
                    "alpha": float(a),
                    "momentum": float(m),
                    _tol_name(tol): int(hit[i, j]),
                    "reached": int(hit[i, j] >= 0),
                    "predicted_iters": math.ceil(math.log(tol) / math.log(pred)) if 0 < pred < 1 else -1,
                    "gd_over_method": float(hit[i, 0] / hit[i, j]) if min(hit[i, 0], hit[i, j]) > 0 else -1.0,
                    "predicted_rate": pred,
                    "measured_rate": _rate(rel, half, int(hit[i, j])),
                }
            )
    secs = time.perf_counter() - start
    notes = [
        f"GD on J(w) = ½wᵀHw, d={d}, Haar-random eigenvectors, eigenvalues log-spaced in [λmax/κ, λmax], "
        f"λmax={lam_max:g}, ‖x0‖=1, α = c·2/λmax, {steps} steps in float64 (NumPy, CPU, {secs:.1f} s per seed); "
        f"a run stops when ‖w‖/‖w0‖ > {_BLOWUP:.0e} (diverged) or < {_TINY:.0e} (converged; avoids underflow).",
        f"Iterations until ‖w‖/‖w0‖ < {tol:g}: GD at α = 2/(λmin+λmax), heavy ball and Nesterov at their classical "
        f"optimal (α, momentum), and both at fixed momentum {momentum:g} with α tuned on the predicted rate; "
        "−1 = not reached within max_iters (iterations, ratio, measured rate). Measured rates: GD over the second "
        "half of each run, the others from first reaching √tol to reaching tol.",
    ]
    if digits:
        notes.append("The digits rows are least squares on sklearn's bundled digits (H = XᵀX/m, standardized X).")
    return ProbeResult(rows=rows, curves=curves, notes=notes)
