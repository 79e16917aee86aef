"""Report sections of the restart studies: the spread of the solutions a procedure trains, best-of-N selection,
restart ensembles, perturbation procedures (ILS, basin hopping, ...), snapshot ensembles, initialization schemes,
restart scheduling against plain random restarts, and every procedure's compute next to its kept accuracy.

Everything is built from runs.json rows of the `restarts` family (analysis/results.summarize_run): ``members``
({metric: [value per trained solution]}), ``procedure`` ({measure: value}), ``procedure_curves``
({name: [value at n = index + 1]}), ``compute_epochs`` and the kept solution's ``test_acc``. Labels are
``technique`` or ``technique@variant``; the technique (before ``@``) decides which section a label joins, and
techniques absent from ``groups`` are skipped. Sentences never contain ``|`` (they go into markdown tables'
neighbourhood unescaped)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from techbench.analysis.stats import mean_ci, paired_diff_ci
from techbench.report.plots import plt, save_figure

Rows = list[dict[str, Any]]
Groups = dict[str, Rows]

# Procedures that train independent solutions and keep the best on validation: their members are i.i.d. draws.
RANDOM_LIKE = ("random_restarts", "fixed_interval", "on_plateau", "early_abandon")
PERTURBATION = ("iterated_local_search", "basin_hopping", "selective_perturbation", "partial_reinit")
SNAPSHOT = ("sgdr", "snapshot_ensemble")
SCHEDULING = ("fixed_interval", "on_plateau", "early_abandon")
BASELINE = "random_restarts"


def restart_findings(groups: Groups, stem: Path) -> tuple[list[str], list[Path]]:
    """Sentences for "What the numbers say" and the figures (``<stem>_restarts*.png``) of a restart study."""
    groups = {label: rows for label, rows in groups.items() if rows}
    lines: list[str] = []
    figures: list[Path] = []
    for part in (_distribution, _selection_and_ensembles):
        text, fig = part(groups, stem)
        lines += text
        figures += [fig] if fig else []
    lines += _perturbation_lines(groups)
    lines += _snapshot_lines(groups)
    lines += _init_lines(groups)
    lines += _scheduling_lines(groups)
    text, fig = _compute(groups, stem)
    lines += text
    figures += [fig] if fig else []
    return [line.replace("|", "/") for line in lines], figures


# --- helpers -------------------------------------------------------------------------------------------------------


def _tech(label: str) -> str:
    return label.split("@", 1)[0]


def _labels(groups: Groups, techniques: tuple[str, ...] | Callable[[str], bool]) -> list[str]:
    keep = techniques if callable(techniques) else (lambda t: t in techniques)
    return sorted(label for label in groups if keep(_tech(label)))


def _finite(values) -> list[float]:
    out = []
    for v in values or []:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


def _members(rows: Rows, key: str) -> list[float]:
    """Every trained solution's ``key`` over all seeds (non-finite values left out)."""
    return [v for r in rows for v in _finite((r.get("members") or {}).get(key))]


def _proc(row: dict[str, Any], key: str) -> float | None:
    v = (row.get("procedure") or {}).get(key)
    f = _finite([v])
    return f[0] if f else None


def _per_seed(rows: Rows, fn: Callable[[dict[str, Any]], float | None]) -> dict[int, float]:
    out = {}
    for r in rows:
        try:
            v = fn(r)
        except (KeyError, IndexError, TypeError, ZeroDivisionError):
            v = None
        if v is not None and math.isfinite(v):
            out[r["seed"]] = float(v)
    return out


def _value(key: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda r: r.get(key)


def _mean_curve(rows: Rows, key: str) -> np.ndarray | None:
    """Mean over seeds of procedure_curves[key], cut to the shortest seed's length (every point averages all)."""
    curves = [np.asarray((r.get("procedure_curves") or {}).get(key) or [], dtype=float) for r in rows]
    curves = [c for c in curves if len(c)]
    if not curves:
        return None
    n = min(len(c) for c in curves)
    with np.errstate(all="ignore"):
        return np.nanmean(np.stack([c[:n] for c in curves]), axis=0)


def _curve_at(row: dict[str, Any], key: str, index: int) -> float | None:
    c = (row.get("procedure_curves") or {}).get(key) or []
    return float(c[index]) if c else None


def _curve_by_seed(rows: Rows, key: str, index: int) -> dict[int, float]:
    return _per_seed(rows, lambda r: _curve_at(r, key, index))


def _member_mean(row: dict[str, Any], key: str) -> float | None:
    v = _finite((row.get("members") or {}).get(key))
    return float(np.mean(v)) if v else None


def _either(a: float | None, b: float | None) -> float | None:
    return a if a is not None else b


def _kept_val_loss(row: dict[str, Any]) -> float | None:
    """The kept solution's validation loss: the procedure's own record, else the lowest member's."""
    for key in ("kept_val_loss", "best_val_loss"):
        v = _proc(row, key)
        if v is not None:
            return v
    if row.get("final_val_loss") is not None and math.isfinite(row["final_val_loss"]):
        return float(row["final_val_loss"])
    v = _finite((row.get("members") or {}).get("val_loss"))
    return min(v) if v else None


def _first_val_loss(row: dict[str, Any]) -> float | None:
    v = (row.get("members") or {}).get("val_loss") or []
    f = _finite(v[:1])
    return f[0] if f else None


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _path(stem: Path, suffix: str) -> Path:
    return stem.with_name(stem.name + suffix)


# --- the spread of the trained solutions ------------------------------------------------------------------------------


def _distribution(groups: Groups, stem: Path) -> tuple[list[str], Path | None]:
    """Box plus strip plot of every trained solution's final validation loss and accuracy per label; the median,
    best and beats-the-median rate of the random-restart-like procedures."""
    labels = [lb for lb in sorted(groups) if _members(groups[lb], "val_loss")]
    if not labels:
        return [], None
    lines = []
    for label in labels:
        rows = groups[label]
        tech = _tech(label)
        beats = mean_ci([_proc(r, "beats_median_frac") for r in rows])
        if not (tech in RANDOM_LIKE or beats.n):  # init_* schemes: their own sentences (_init_lines)
            continue
        loss, acc = _members(rows, "val_loss"), _members(rows, "val_acc")
        text = (
            f"`{label}`: final validation loss over its {len(loss)} trained solutions ({len(rows)} seeds): "
            f"median {np.median(loss):.4f}, best {min(loss):.4f}, worst {max(loss):.4f}"
        )
        if acc:
            text += f"; validation accuracy median {_pct(float(np.median(acc)))}, best {_pct(max(acc))}"
        if beats.n:
            text += f"; a restart beats its run's median in {beats.fmt(100, 1)} % of cases (mean over seeds)"
        lines.append(text + ".")
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.1 * len(labels) + 3), 3.8))
    rng = np.random.default_rng(0)  # jitter of the strip plot only
    for ax, key, name in ((axes[0], "val_loss", "final validation loss"), (axes[1], "val_acc", "final validation acc")):
        data = [_members(groups[lb], key) for lb in labels]
        for p, d in enumerate(data, start=1):
            if not d:
                continue
            # One call per label: a list of equal-length lists would be read as a 2-D array, split by columns.
            ax.boxplot(np.asarray(d), positions=[p], widths=0.6, showfliers=False)
            ax.plot(p + rng.uniform(-0.18, 0.18, len(d)), d, "o", ms=3, alpha=0.5, color="C0")
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=45, ha="right", fontsize=7)
        ax.set(ylabel=name, title=f"{name}: every trained solution")
    fig.suptitle(f"{stem.name}: solutions of all seeds")
    return lines, save_figure(fig, _path(stem, "_restarts.png"))


# --- best-of-N and restart ensembles ----------------------------------------------------------------------------------


def _selection_and_ensembles(groups: Groups, stem: Path) -> tuple[list[str], Path | None]:
    lines = []
    panels = {
        "expected_best_of_n": ("best of N on validation: test acc (%)", 100.0),
        "ensemble_acc": ("ensemble test accuracy (%)", 100.0),
        "ensemble_nll": ("ensemble test NLL", 1.0),
    }
    curves = {
        key: {lb: c for lb in sorted(groups) if (c := _mean_curve(groups[lb], key)) is not None} for key in panels
    }
    for label, c in curves["expected_best_of_n"].items():
        rows = groups[label]
        gain = paired_diff_ci(
            _curve_by_seed(rows, "expected_best_of_n", len(c) - 1), _curve_by_seed(rows, "expected_best_of_n", 0)
        )
        lines.append(
            f"`{label}`: expected test accuracy of the restart selected on validation, best of 1 → best of "
            f"{len(c)}: {_pct(c[0])} → {_pct(c[-1])} (gain paired over seeds {gain.fmt(100)} pp)."
        )
    for label, acc in curves["ensemble_acc"].items():
        rows = groups[label]
        n = len(acc)
        full = _curve_by_seed(rows, "ensemble_acc", n - 1)
        single = _per_seed(rows, lambda r: _either(_member_mean(r, "test_acc"), _curve_at(r, "ensemble_acc", 0)))
        d = paired_diff_ci(full, single)
        text = (
            f"`{label}`: ensemble of {n} restarts (averaged probabilities) test accuracy {_pct(acc[-1])} vs "
            f"{_pct(mean_ci(list(single.values())).mean)} for the mean single member: gain {d.fmt(100)} pp "
            "(paired over seeds)"
        )
        nll = curves["ensemble_nll"].get(label)
        if nll is not None:
            m = len(nll)
            full_nll = _curve_by_seed(rows, "ensemble_nll", m - 1)
            single_nll = _per_seed(
                rows, lambda r: _either(_member_mean(r, "test_loss"), _curve_at(r, "ensemble_nll", 0))
            )
            dn = paired_diff_ci(full_nll, single_nll)
            text += f"; NLL {nll[0]:.4f} (1 member) → {nll[-1]:.4f} ({m}), full ensemble − mean member {dn.fmt(1, 4)}"
        lines.append(text + ".")
    present = [k for k in panels if curves[k]]
    if not present:
        return lines, None
    fig, axes = plt.subplots(1, len(present), figsize=(4.6 * len(present), 3.6), squeeze=False)
    for ax, key in zip(axes[0], present, strict=True):
        name, scale = panels[key]
        for i, (label, c) in enumerate(curves[key].items()):
            ax.plot(np.arange(1, len(c) + 1), scale * c, "o-", ms=3, color=f"C{i % 10}", label=label)
        ax.set(xlabel="number of restarts N", title=name)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=6)
    fig.suptitle(f"{stem.name}: mean over seeds")
    return lines, save_figure(fig, _path(stem, "_restarts_curves.png"))


# --- perturbation procedures ------------------------------------------------------------------------------------------


def _perturbation_lines(groups: Groups) -> list[str]:
    """Accept rate, and the kept solution's validation loss against the first solution's (paired over seeds)."""
    lines = []
    for label in _labels(groups, PERTURBATION):
        rows = groups[label]
        rate = mean_ci([_either(_proc(r, "accept_rate"), _member_mean(r, "accepted")) for r in rows])
        kept, first = _per_seed(rows, _kept_val_loss), _per_seed(rows, _first_val_loss)
        d = paired_diff_ci(kept, first)
        text = f"`{label}`: accept rate {rate.fmt(100, 1)} %" if rate.n else f"`{label}`: accept rate not recorded"
        if d.n:
            text += (
                f"; kept validation loss {mean_ci(list(kept.values())).mean:.4f} vs the first solution's "
                f"{mean_ci(list(first.values())).mean:.4f} (kept − first {d.fmt(1, 4)}, paired over seeds)"
            )
        acc = mean_ci([r.get("test_acc") for r in rows if r.get("test_acc") is not None])
        if acc.n:
            text += f"; kept test accuracy {acc.fmt(100)} %"
        lines.append(text + ".")
    return lines


# --- snapshot ensembles -----------------------------------------------------------------------------------------------


def _snapshot_lines(groups: Groups) -> list[str]:
    """Snapshot ensemble vs its last snapshot vs independent restarts of the same total cost, paired by seed."""
    lines = []
    for label in _labels(groups, SNAPSHOT):
        rows = groups[label]
        ens = _per_seed(rows, lambda r: _proc(r, "snapshot_ensemble_test_acc"))
        last = _per_seed(rows, lambda r: _proc(r, "last_snapshot_test_acc"))
        indep = _per_seed(rows, lambda r: _proc(r, "independent_ensemble_test_acc"))
        if not ens:
            continue
        text = f"`{label}`: snapshot ensemble test accuracy {mean_ci(list(ens.values())).fmt(100)} %"
        if last:
            text += (
                f", last snapshot {mean_ci(list(last.values())).fmt(100)} % "
                f"(ensemble − last {paired_diff_ci(ens, last).fmt(100)} pp)"
            )
        if indep:
            text += (
                f", ensemble of independent restarts of the same total cost {mean_ci(list(indep.values())).fmt(100)} % "
                f"(snapshot − independent {paired_diff_ci(ens, indep).fmt(100)} pp)"
            )
        lines.append(text + "; differences paired over seeds.")
    return lines


# --- initialization schemes -------------------------------------------------------------------------------------------


def _init_lines(groups: Groups) -> list[str]:
    """Each init scheme's validation-loss distribution and its test accuracy against init_default, by seed."""
    labels = _labels(groups, lambda t: t.startswith("init_"))
    base = groups.get("init_default")
    lines = []
    for label in labels:
        rows = groups[label]
        loss = _members(rows, "val_loss")
        text = f"`{label}`"
        if loss:
            q1, med, q3 = np.percentile(loss, [25, 50, 75])
            text += (
                f": validation loss of its {len(loss)} solutions median {med:.4f} (quartiles {q1:.4f} to {q3:.4f}, "
                f"best {min(loss):.4f})"
            )
        if base and label != "init_default":
            kept = paired_diff_ci(_per_seed(rows, _value("test_acc")), _per_seed(base, _value("test_acc")))
            mean_member = paired_diff_ci(
                _per_seed(rows, lambda r: _member_mean(r, "test_acc")),
                _per_seed(base, lambda r: _member_mean(r, "test_acc")),
            )
            text += f"; test accuracy − init_default paired by seed: kept solution {kept.fmt(100)} pp"
            if mean_member.n:
                text += f", mean over its solutions {mean_member.fmt(100)} pp"
        if text != f"`{label}`":
            lines.append(text + ".")
    return lines


# --- restart scheduling -----------------------------------------------------------------------------------------------


def _scheduling_lines(groups: Groups) -> list[str]:
    """Compute saved and quality lost against random restarts: per seed 1 − epochs / random_restarts' epochs and
    random_restarts' kept test accuracy − this one's (positive = lost), both as means with a CI over seeds."""
    base = groups.get(BASELINE)
    lines = []
    for label in _labels(groups, SCHEDULING):
        rows = groups[label]
        if base:
            spent = _per_seed(rows, _value("compute_epochs"))
            ref = _per_seed(base, _value("compute_epochs"))
            saved = mean_ci([1.0 - spent[s] / ref[s] for s in sorted(set(spent) & set(ref)) if ref[s] > 0])
            lost = paired_diff_ci(_per_seed(base, _value("test_acc")), _per_seed(rows, _value("test_acc")))
            if saved.n or lost.n:
                lines.append(
                    f"`{label}` vs `{BASELINE}`: compute saved {saved.fmt(100, 1)} % "
                    f"({mean_ci(list(spent.values())).mean:.1f} vs {mean_ci(list(ref.values())).mean:.1f} epochs), "
                    f"quality lost {lost.fmt(100)} pp test accuracy (paired over seeds; negative = gained)."
                )
                continue
        own = mean_ci([_proc(r, "compute_saved_frac") for r in rows])
        if own.n:
            lines.append(
                f"`{label}`: saved {own.fmt(100, 1)} % of the epochs training every restart to the end would take "
                f"(its own count; no `{BASELINE}` run to compare quality with)."
            )
    return lines


# --- compute against quality ------------------------------------------------------------------------------------------


def _compute(groups: Groups, stem: Path) -> tuple[list[str], Path | None]:
    """Every label's epochs trained (all solutions) next to its kept test accuracy; a scatter of the two."""
    entries = []
    for label, rows in groups.items():
        epochs = mean_ci([r.get("compute_epochs") for r in rows if r.get("compute_epochs") is not None])
        acc = mean_ci([r.get("test_acc") for r in rows if r.get("test_acc") is not None])
        if epochs.n and acc.n:
            entries.append((label, epochs, acc))
    if not entries:
        return [], None
    entries.sort(key=lambda e: (e[1].mean, e[0]))
    lines = [
        "Compute (epochs trained over all solutions, mean over seeds) and the kept solution's test accuracy: "
        + "; ".join(f"`{lb}` {ep.mean:.1f} epochs, {acc.fmt(100)} %" for lb, ep, acc in entries)
        + "."
    ]
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (label, ep, acc) in enumerate(entries):
        hw = acc.half_width if math.isfinite(acc.half_width) else 0.0
        ax.errorbar([ep.mean], [100 * acc.mean], yerr=[100 * hw], fmt="o", color=f"C{i % 10}", label=label)
    ax.set(xlabel="epochs trained (all solutions)", ylabel="kept test accuracy (%)")
    ax.set_title(f"{stem.name}: cost vs quality")
    ax.legend(fontsize=6)
    return lines, save_figure(fig, _path(stem, "_restarts_compute.png"))
