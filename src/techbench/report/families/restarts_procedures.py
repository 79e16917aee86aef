"""The restart family's findings per kind of procedure: perturbation search (accept rates, kept against first
solution), snapshot ensembles (against their last snapshot and independent restarts of the same cost),
initialization schemes (against PyTorch's default), and restart schedules (compute saved, quality lost)."""

from __future__ import annotations

import numpy as np

from techbench.analysis.stats import mean_ci, paired_diff_ci
from techbench.report.families import FindingsContext, Groups
from techbench.report.families.restarts_common import (
    baseline,
    either,
    first_val_loss,
    kept_val_loss,
    kind,
    labels,
    member_mean,
    members,
    per_seed,
    proc,
)
from techbench.report.families.restarts_common import value as field

# --- perturbation procedures ------------------------------------------------------------------------------------------


def perturbation_lines(groups: Groups, ctx: FindingsContext) -> list[str]:
    """Accept rate, and the kept solution's validation loss against the first solution's (paired over seeds)."""
    lines = []
    for label in labels(groups, ctx, kind("perturbation")):
        rows = groups[label]
        rate = mean_ci([either(proc(r, "accept_rate"), member_mean(r, "accepted")) for r in rows])
        kept, first = per_seed(rows, kept_val_loss), per_seed(rows, first_val_loss)
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


def snapshot_lines(groups: Groups, ctx: FindingsContext) -> list[str]:
    """Snapshot ensemble vs its last snapshot vs independent restarts of the same total cost, paired by seed."""
    lines = []
    for label in labels(groups, ctx, kind("snapshot")):
        rows = groups[label]
        ens = per_seed(rows, lambda r: proc(r, "snapshot_ensemble_test_acc"))
        last = per_seed(rows, lambda r: proc(r, "last_snapshot_test_acc"))
        indep = per_seed(rows, lambda r: proc(r, "independent_ensemble_test_acc"))
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


def init_lines(groups: Groups, ctx: FindingsContext) -> list[str]:
    """Each init scheme's validation-loss distribution and its test accuracy against PyTorch's default scheme
    (plain random restarts), by seed."""
    schemes = labels(groups, ctx, lambda f: f.get("init") is not None)
    default = baseline(groups, ctx)
    base = groups.get(default) if default else None
    lines = []
    for label in schemes:
        rows = groups[label]
        loss = members(rows, "val_loss")
        text = f"`{label}`"
        if loss:
            q1, med, q3 = np.percentile(loss, [25, 50, 75])
            text += (
                f": validation loss of its {len(loss)} solutions median {med:.4f} (quartiles {q1:.4f} to {q3:.4f}, "
                f"best {min(loss):.4f})"
            )
        if base and label != default:
            kept = paired_diff_ci(per_seed(rows, field("test_acc")), per_seed(base, field("test_acc")))
            mean_member = paired_diff_ci(
                per_seed(rows, lambda r: member_mean(r, "test_acc")),
                per_seed(base, lambda r: member_mean(r, "test_acc")),
            )
            text += f"; test accuracy − {default} paired by seed: kept solution {kept.fmt(100)} pp"
            if mean_member.n:
                text += f", mean over its solutions {mean_member.fmt(100)} pp"
        if text != f"`{label}`":
            lines.append(text + ".")
    return lines


# --- restart scheduling -----------------------------------------------------------------------------------------------


def scheduling_lines(groups: Groups, ctx: FindingsContext) -> list[str]:
    """Compute saved and quality lost against random restarts: per seed 1 − epochs / random_restarts' epochs and
    random_restarts' kept test accuracy − this one's (positive = lost), both as means with a CI over seeds."""
    base_label = baseline(groups, ctx)
    base = groups.get(base_label) if base_label else None
    lines = []
    for label in labels(groups, ctx, kind("scheduling")):
        rows = groups[label]
        if base:
            spent = per_seed(rows, field("compute_epochs"))
            ref = per_seed(base, field("compute_epochs"))
            saved = mean_ci([1.0 - spent[s] / ref[s] for s in sorted(set(spent) & set(ref)) if ref[s] > 0])
            lost = paired_diff_ci(per_seed(base, field("test_acc")), per_seed(rows, field("test_acc")))
            if saved.n or lost.n:
                lines.append(
                    f"`{label}` vs `{base_label or 'random restarts'}`: compute saved {saved.fmt(100, 1)} % "
                    f"({mean_ci(list(spent.values())).mean:.1f} vs {mean_ci(list(ref.values())).mean:.1f} epochs), "
                    f"quality lost {lost.fmt(100)} pp test accuracy (paired over seeds; negative = gained)."
                )
                continue
        own = mean_ci([proc(r, "compute_saved_frac") for r in rows])
        if own.n:
            lines.append(
                f"`{label}`: saved {own.fmt(100, 1)} % of the epochs training every restart to the end would take "
                f"(its own count; no `{base_label or 'random restarts'}` run to compare quality with)."
            )
    return lines
