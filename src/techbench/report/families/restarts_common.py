"""Helpers of the restart family's findings: per-seed values, members, procedure measures and curves of the
rows of a restart study, and which labels a comparison takes (by the techniques' flags ``kind`` and ``init``,
not by their names)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from techbench.report.families import FindingsContext, Groups

Rows = list[dict[str, Any]]


def tech(label: str) -> str:
    return label.split("@", 1)[0]


def labels(groups: Groups, ctx: FindingsContext, keep: Callable[[dict[str, Any]], bool]) -> list[str]:
    """The labels whose technique's flags (kind, init) satisfy ``keep``."""
    return sorted(label for label in groups if keep(ctx.techniques.get(tech(label), {})))


def kind(*kinds: str) -> Callable[[dict[str, Any]], bool]:
    return lambda flags: flags.get("kind") in kinds


def random_like(flags: dict[str, Any]) -> bool:
    """Procedures whose members are independent draws kept on validation: plain random restarts and the
    restart schedules within a budget (init schemes have their own sentences)."""
    return flags.get("kind") == "scheduling" or (flags.get("kind") == "independent" and flags.get("init") is None)


def baseline(groups: Groups, ctx: FindingsContext) -> str | None:
    """Plain random restarts (independent, PyTorch's init): what restart schedules are compared with."""
    found = labels(groups, ctx, lambda f: f.get("kind") == "independent" and f.get("init") is None)
    return next((lb for lb in found if "@" not in lb), found[0] if found else None)


def finite(values) -> list[float]:
    out = []
    for v in values or []:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


def members(rows: Rows, key: str) -> list[float]:
    """Every trained solution's ``key`` over all seeds (non-finite values left out)."""
    return [v for r in rows for v in finite((r.get("members") or {}).get(key))]


def proc(row: dict[str, Any], key: str) -> float | None:
    v = (row.get("procedure") or {}).get(key)
    f = finite([v])
    return f[0] if f else None


def per_seed(rows: Rows, fn: Callable[[dict[str, Any]], float | None]) -> dict[int, float]:
    out = {}
    for r in rows:
        try:
            v = fn(r)
        except (KeyError, IndexError, TypeError, ZeroDivisionError):
            v = None
        if v is not None and math.isfinite(v):
            out[r["seed"]] = float(v)
    return out


def value(key: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda r: r.get(key)


def mean_curve(rows: Rows, key: str) -> np.ndarray | None:
    """Mean over seeds of procedure_curves[key], cut to the shortest seed's length (every point averages all)."""
    curves = [np.asarray((r.get("procedure_curves") or {}).get(key) or [], dtype=float) for r in rows]
    curves = [c for c in curves if len(c)]
    if not curves:
        return None
    n = min(len(c) for c in curves)
    with np.errstate(all="ignore"):
        return np.nanmean(np.stack([c[:n] for c in curves]), axis=0)


def curve_at(row: dict[str, Any], key: str, index: int) -> float | None:
    c = (row.get("procedure_curves") or {}).get(key) or []
    return float(c[index]) if c else None


def curve_by_seed(rows: Rows, key: str, index: int) -> dict[int, float]:
    return per_seed(rows, lambda r: curve_at(r, key, index))


def member_mean(row: dict[str, Any], key: str) -> float | None:
    v = finite((row.get("members") or {}).get(key))
    return float(np.mean(v)) if v else None


def either(a: float | None, b: float | None) -> float | None:
    return a if a is not None else b


def kept_val_loss(row: dict[str, Any]) -> float | None:
    """The kept solution's validation loss: the procedure's own record, else the lowest member's."""
    for key in ("kept_val_loss", "best_val_loss"):
        v = proc(row, key)
        if v is not None:
            return v
    if row.get("final_val_loss") is not None and math.isfinite(row["final_val_loss"]):
        return float(row["final_val_loss"])
    v = finite((row.get("members") or {}).get("val_loss"))
    return min(v) if v else None


def first_val_loss(row: dict[str, Any]) -> float | None:
    v = (row.get("members") or {}).get("val_loss") or []
    f = finite(v[:1])
    return f[0] if f else None


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def path(stem: Path, suffix: str) -> Path:
    return stem.with_name(stem.name + suffix)
