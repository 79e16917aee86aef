"""The transfer family's findings per target workload: what starting from the source bought over scratch, whether
fine-tuning beat the frozen backbone (the chapter's C52: it should at larger target sets, not at the smallest),
what each strategy cost the source task (forgetting) for how much of the model it trained, and — in an LR sweep —
how much smaller the fine-tuning LR chosen on validation is than the one from scratch (C53); parameter-efficient
methods' memory and distillation's gain are in transfer_peft.py."""

from __future__ import annotations

from pathlib import Path

from techbench.analysis.findings import by_seed
from techbench.analysis.stats import mean_ci, paired_diff_ci
from techbench.report.claims import Verdict
from techbench.report.families import FindingsContext, Groups, mean_of
from techbench.report.families.transfer_peft import FROZEN, distillation_lines, peft_lines


def _diff(groups: Groups, a: str, b: str) -> str:
    d = paired_diff_ci(by_seed(groups[a], "test_acc"), by_seed(groups[b], "test_acc"))
    return f"`{a}` − `{b}`: {d.fmt(100, 1)} pp test accuracy, paired over {d.n} seeds ({d.direction()}, unadjusted CI)"


def findings(groups: Groups, ctx: FindingsContext) -> tuple[list[str], list[Path]]:
    lines = []
    n_train = {round(v) for rows in groups.values() for r in rows if (v := r.get("n_train")) is not None}
    if n_train:
        lines.append(f"Target training examples: {', '.join(str(n) for n in sorted(n_train))}.")
    if "scratch" in groups:
        for label in [FROZEN, "deep_ft"]:
            if label in groups:
                lines.append(_diff(groups, label, "scratch") + ".")
    if FROZEN in groups:
        # every other strategy that starts from the source trains some of it (the registry's `source` flag)
        tuned = [t for t in groups if t != FROZEN and "@" not in t and ctx.flag(t, "source")]
        if tuned:
            best = max(tuned, key=lambda t: mean_of(groups[t], "val_acc") or 0.0)
            lines.append(f"Best fine-tuning strategy on validation: `{best}`; {_diff(groups, best, FROZEN)}.")
    costs = []
    for label in groups:
        share, forgot = mean_of(groups[label], "transfer/trainable_frac"), mean_of(groups[label], "transfer/forgetting")
        if forgot is not None and share is not None:
            costs.append(f"`{label}` {100 * share:.1f} % trained, source accuracy −{100 * forgot:.1f} pp")
    lines += lr_ratio(groups)
    peft, figures = peft_lines(groups, ctx)
    lines += peft + distillation_lines(groups, ctx)
    if costs:
        lines.append(
            "Trainable share and forgetting (source test accuracy lost, source classifier restored): "
            + "; ".join(costs)
            + "."
        )
    return lines, figures


def _lr(label: str) -> float | None:
    variant = label.split("@", 1)[1] if "@" in label else ""
    for part in variant.split(","):
        key, _, val = part.partition("=")
        if key == "lr":
            return float(val)
    return None


def lr_ratio(groups: Groups) -> list[str]:
    """The chapter's "fine-tuning LR typically 10-100x smaller" (C53): per seed, the validation-best LR of the
    sweep from scratch over that of each strategy that starts from the source, paired by seed."""
    by_tech: dict[str, dict[float, list[dict]]] = {}
    for label, rows in groups.items():
        lr = _lr(label)
        if lr is not None:
            by_tech.setdefault(label.split("@", 1)[0], {})[lr] = rows
    if "scratch" not in by_tech or len(by_tech["scratch"]) < 3:
        return []

    def best_per_seed(sweep: dict[float, list[dict]]) -> dict[int, float]:
        scores: dict[int, dict[float, float]] = {}
        for lr, rows in sweep.items():
            for seed, v in by_seed(rows, "val_acc").items():
                scores.setdefault(seed, {})[lr] = v
        return {seed: max(s, key=s.get) for seed, s in scores.items()}

    def best_mean(sweep: dict[float, list[dict]]) -> float:
        return max(sweep, key=lambda lr: mean_ci(list(by_seed(sweep[lr], "val_acc").values())).mean)

    scratch = best_per_seed(by_tech["scratch"])
    lines = []
    for tech, sweep in by_tech.items():
        if tech == "scratch":
            continue
        own = best_per_seed(sweep)
        ratios = sorted(scratch[s] / own[s] for s in set(scratch) & set(own))
        if not ratios:
            continue
        within = sum(10 <= r <= 100 for r in ratios)
        edges = [t for t, sw in (("scratch", by_tech["scratch"]), (tech, sweep)) if best_mean(sw) in (min(sw), max(sw))]
        edge = (
            f" The best LR of {', '.join(f'`{t}`' for t in edges)} is at the edge of its grid: widen it."
            if edges
            else ""
        )
        small = sum(r <= 3 for r in ratios)
        outcome = (
            "inconclusive"  # the best LR may lie off the grid
            if edges
            else "confirmed"
            if within > len(ratios) / 2
            else "refuted"
            if small > len(ratios) / 2
            else "inconclusive"
        )
        evidence = (
            f"Validation-best LR: scratch {best_mean(by_tech['scratch']):g}, `{tech}` {best_mean(sweep):g} (mean over "
            f"seeds); per seed the scratch/`{tech}` ratio is {', '.join(f'{r:g}' for r in ratios)} (median "
            f"{ratios[len(ratios) // 2]:g}; in the chapter's 10-100x range in {within}/{len(ratios)} seeds, "
            f"on a grid of {len(sweep)} LRs; at most 3x in {small}).{edge}"
        )
        lines.append(Verdict("C53", outcome, evidence))
    return lines
