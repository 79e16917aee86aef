"""What parameter-efficient methods and distillation cost and buy, per target workload.

PEFT (C57, C58): each method's trainable share and peak training-step memory (parameters, gradients, optimizer
state, activations: training/memory.py) at the batch sizes of ``train.memory_batches``, as a ratio to full
fine-tuning (`deep_ft`), and its accuracy difference to full fine-tuning with the chapter's margins (LoRA
within 1 pp, BitFit within 2 pp and above the linear probe). Distillation (C59): the student with the teacher's
soft targets against the same student on labels only (`scratch`), next to the teacher it learns from.
"""

from __future__ import annotations

import re
from pathlib import Path

from techbench.analysis.findings import by_seed
from techbench.analysis.stats import paired_diff_ci
from techbench.report.claims import decide
from techbench.report.families import FindingsContext, Groups, mean_of
from techbench.report.plots import plt, save_figure, style

FULL = "deep_ft"
FROZEN = "feature_extraction"  # the linear probe on the frozen source
MEMORY = re.compile(r"^memory/step_mb/b(\d+)$")


def memory_batches(groups: Groups) -> list[int]:
    return sorted(
        {int(m[1]) for rows in groups.values() for r in rows for k in r.get("metrics", {}) if (m := MEMORY.match(k))}
    )


def _acc_diff(groups: Groups, a: str, b: str):
    return paired_diff_ci(by_seed(groups[a], "test_acc"), by_seed(groups[b], "test_acc"))


def peft_lines(groups: Groups, ctx: FindingsContext) -> tuple[list[str], list[Path]]:
    batches = memory_batches(groups)
    if FULL not in groups or not batches:
        return [], []
    full = {b: mean_of(groups[FULL], f"memory/step_mb/b{b}") for b in batches}
    lines, costs = [], []
    for label, rows in groups.items():
        share = mean_of(rows, "transfer/trainable_frac")
        if label == FULL or share is None or not ctx.flag(label, "source"):
            continue
        ratios = [f"{full[b] / m:.1f}×" for b in batches if (m := mean_of(rows, f"memory/step_mb/b{b}")) and full[b]]
        d = _acc_diff(groups, label, FULL)
        costs.append(
            f"`{label}` trains {100 * share:.2f} %, needs {'/'.join(ratios)} less step memory than `{FULL}` at "
            f"batch {'/'.join(str(b) for b in batches)}, test accuracy {d.fmt(100, 1)} pp vs `{FULL}`"
        )
    if costs:
        lines.append(
            "Parameter-efficient methods against full fine-tuning (paired over seeds): " + "; ".join(costs) + "."
        )
    lines += _claims(groups, batches, full)
    return lines, [p for p in [memory_figure(groups, batches, ctx)] if p]


def _claims(groups: Groups, batches: list[int], full: dict[int, float | None]) -> list[str]:
    out = []
    if "lora" in groups and full.get(max(batches)):
        b = max(batches)
        ratio = full[b] / (mean_of(groups["lora"], f"memory/step_mb/b{b}") or float("nan"))
        d = _acc_diff(groups, "lora", FULL)
        within = d.n > 1 and d.low >= -0.01 and d.high <= 0.01
        inside = 3 <= ratio <= 10
        evidence = (
            f"Memory ratio {ratio:.1f}× at batch {b} ({'inside' if inside else 'outside'} 3-10×); `lora` − `{FULL}` "
            f"accuracy CI {d.fmt(100, 1)} pp {'within' if within else 'not within'} ±1 pp."
        )
        off = d.n > 1 and (d.low > 0.01 or d.high < -0.01)
        out.append(decide("C57", inside and within, not inside or off, evidence))
    if "bitfit" in groups:
        share = _backbone_share(groups, "bitfit")
        d = _acc_diff(groups, FULL, "bitfit")
        probe = _acc_diff(groups, "bitfit", FROZEN) if FROZEN in groups else None
        beats = f"; BitFit − linear probe {probe.fmt(100, 1)} pp" if probe else ""
        evidence = (
            f"BitFit trains {100 * share:.2f} % of the source's parameters (its biases; the new classifier not "
            f"counted); `{FULL}` − BitFit {d.fmt(100, 1)} pp "
            f"({'within' if d.n > 1 and d.high <= 0.02 else 'not within'} 2 pp){beats}."
        )
        holds = share < 0.01 and d.n > 1 and d.high <= 0.02 and probe is not None and probe.low > 0
        fails = share >= 0.01 or (d.n > 1 and d.low > 0.02) or (probe is not None and probe.n > 1 and probe.high < 0)
        out.append(decide("C58", holds, fails, evidence))
    return out


def _backbone_share(groups: Groups, label: str) -> float:
    """Trained share of the source's own parameters: the new classifier (all that feature extraction trains)
    left out of both counts; the share of the whole model without feature extraction to size the head."""
    trained, total = (mean_of(groups[label], f"transfer/params_{k}") for k in ("trainable", "total"))
    head = mean_of(groups[FROZEN], "transfer/params_trainable") if FROZEN in groups else 0
    if trained is None or not total:
        return float("nan")
    return (trained - (head or 0)) / (total - (head or 0))


def memory_figure(groups: Groups, batches: list[int], ctx: FindingsContext) -> Path | None:
    labels = [t for t, rows in groups.items() if mean_of(rows, f"memory/step_mb/b{batches[0]}") is not None]
    if len(batches) < 2 or not labels:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, label in enumerate(labels):
        ax.plot(batches, [mean_of(groups[label], f"memory/step_mb/b{b}") for b in batches], label=label, **style(i))
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="peak training-step memory (MB)", title=ctx.title)
    ax.legend(fontsize=7)
    return save_figure(fig, ctx.figure("_memory.png"))


def distillation_lines(groups: Groups, ctx: FindingsContext) -> list[str]:
    taught = [t for t in groups if ctx.flag(t, "teacher")]
    if not taught or "scratch" not in groups:
        return []
    lines = []
    teacher_acc = mean_of(groups[taught[0]], "transfer/teacher_acc")
    teacher_params = mean_of(groups[taught[0]], "transfer/teacher_params")
    student = mean_of(groups["scratch"], "transfer/params_total")
    if teacher_acc is not None and teacher_params and student:
        lines.append(
            f"Teacher: test accuracy {100 * teacher_acc:.1f} % with {teacher_params:.0f} parameters; the student has "
            f"{student:.0f} ({student / teacher_params:.2f}× the teacher)."
        )
    for label in taught:
        d = _acc_diff(groups, label, "scratch")
        evidence = (
            f"`{label}` − `scratch` {d.fmt(100, 1)} pp test accuracy, paired over {d.n} seeds ({d.direction()}, "
            "unadjusted CI)."
        )
        lines.append(decide("C59", d.n > 1 and d.low > 0, d.n > 1 and d.high < 0, evidence))
    return lines
