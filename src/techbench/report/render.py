"""Render each study's results as reports/<study>.md and all of them as one self-contained index.html."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from techbench.analysis.findings import describe, tuned_vs_default
from techbench.analysis.stats import mean_ci
from techbench.config import slot_of
from techbench.errors import ConfigError
from techbench.report.plots import learning_curves, sweep_plot
from techbench.report.probes import probe_sections

REPORTS_DIR = Path("reports")


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


def _ci(values, scale: float = 1.0, digits: int = 2) -> str:
    est = mean_ci([v for v in values if v is not None])
    return est.fmt(scale, digits) if est.n else "–"


def _groups(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        label = r["technique"] if r["variant"] == "default" else f"{r['technique']}@{r['variant']}"
        out.setdefault(label, []).append(r)
    return out


def _setup(configs: dict[str, Any], machines: list[str] | None = None) -> list[str]:
    if not configs:
        return []
    c = next(iter(configs.values()))
    fmt = lambda d: ", ".join(f"{k}={v}" for k, v in d.items() if k != "name")  # noqa: E731
    hw = c["hardware"]
    slot = slot_of(c["family"])
    fixed = [f"{s} `{v['name']}` ({fmt(v)})" for s, v in c.items() if s in FIXED_SLOTS and s != slot]
    return [
        f"Workload `{c['workload']}`: data `{c['data']['name']}` ({fmt(c['data'])}); "
        f"model `{c['model']['name']}` ({fmt(c['model'])}).",
        f"Training: {fmt(c['train'])}; {c['seeds']} seeds (0..{c['seeds'] - 1}), paired: the same seed gives "
        "every technique the same initialization and batch order. Fixed components: " + "; ".join(fixed) + ".",
        f"Hardware: accelerator={hw['accelerator']}, devices={hw['devices']}, precision={hw['precision']} "
        f"on {'; '.join(machines) if machines else 'an unrecorded machine'} (as recorded by the runs); "
        f"code version {c['code_version']}.",
        "Technique hyperparameters (as trained, after the batch regime is applied): "
        + "; ".join(f"`{t.split('/', 1)[1]}` ({_as_trained(cfg, slot, fmt)})" for t, cfg in configs.items())
        + ".",
    ] + _footnotes(configs)


def _as_trained(cfg: dict[str, Any], slot: str, fmt) -> str:
    text = fmt(cfg[slot])
    if slot == "batching":  # the regime changes batch size, epochs and (large batch) the optimizer
        opt = cfg["optimizer"]
        text += f"; optimizer {opt['name']} lr={opt['lr']:g}; batch {cfg['train']['batch_size']}"
        text += f" x {cfg['train']['accumulate_grad_batches']}; {cfg['train']['epochs']} epochs"
    return text or "no hyperparameters"


def _footnotes(configs: dict[str, Any]) -> list[str]:
    from techbench.techniques.optimizers import OPTIMIZERS

    full = sorted(
        {
            c["optimizer"]["name"]
            for c in configs.values()
            if c["optimizer"]["name"] in OPTIMIZERS and OPTIMIZERS.get(c["optimizer"]["name"]).meta.get("full_batch")
        }
    )
    if not full:
        return []
    return [
        f"Note on {', '.join(f'`{n}`' for n in full)}: full-batch methods make one update per epoch, and an "
        "L-BFGS update runs up to max_iter inner iterations with a line search (many loss and gradient "
        "evaluations), so their epochs are not comparable with mini-batch epochs: compare seconds to target."
    ]


FIXED_SLOTS = ("optimizer", "schedule", "batching", "regularizer", "stopping", "dropout")
# Extra columns (row key, header, scale, digits) shown when a study's runs have them.
EXTRA_COLUMNS = {
    "batch_size": [
        ("updates_to_target", "updates to target", 1, 0),
        ("throughput", "throughput samples/s", 1, 0),
        ("peak_memory_mb", "peak step memory MB", 1, 2),
        ("effective_batch", "batch", 1, 0),
        ("epochs_run", "epochs run", 1, 0),
        ("updates", "updates", 1, 0),
    ],
    "regularization": [
        ("weights_l2", "‖W‖₂", 1, 2),
        ("zero_frac", "exact zeros %", 100, 2),
        ("near_zero_frac", "near-zero (abs < 1e-3) %", 100, 1),
    ],
    "early_stopping": [
        ("stop_epoch", "stopped at epoch", 1, 1),
        ("epochs_saved", "epochs saved", 1, 1),
        ("test_acc_last", "test acc, last weights %", 100, 2),
        ("test_acc_best", "test acc, best-val weights %", 100, 2),
    ],
    "dropout": [
        ("ece", "ECE", 1, 3),
        ("mc_acc", "MC test acc %", 100, 2),
        ("mc_nll", "MC NLL", 1, 3),
        ("mc_ece", "MC ECE", 1, 3),
    ],
}


def results_table(groups: dict[str, list[dict[str, Any]]], family: str | None = None) -> Table:
    has_target = any("epochs_to_target" in r for rows in groups.values() for r in rows)
    headers = ["technique", "n", "test acc %", "gen. gap pp", "test loss", "final val loss", "best epoch"]
    headers += ["wall time s"]
    if has_target:
        headers += ["epochs to target", "seconds to target"]
    extra = EXTRA_COLUMNS.get(family or "", [])
    headers += [h for _, h, _, _ in extra]
    headers += ["diverged", "MLflow runs"]
    order = sorted(groups, key=lambda t: -(mean_ci([r["test_acc"] for r in groups[t]]).mean or 0))
    rows = []
    for t in order:
        g = groups[t]
        row = [
            t,
            str(len(g)),
            _ci([r["test_acc"] for r in g], 100),
            _ci([r.get("gen_gap") for r in g], 100),
            # A diverged run's loss is not an average-able number; its accuracy (chance or worse) is.
            _ci([r["test_loss"] for r in g if r["outcome"] != "diverged"], 1, 3),
            _ci([r["final_val_loss"] for r in g if r["outcome"] != "diverged"], 1, 3),
            _ci([r["best_epoch"] for r in g], 1, 1),
            _ci([r["fit_s"] for r in g], 1, 1),
        ]
        if has_target:
            reached = [r for r in g if r.get("epochs_to_target") is not None]
            row += [
                f"{_ci([r['epochs_to_target'] for r in reached], 1, 1)} ({len(reached)}/{len(g)} reached)",
                _ci([r["seconds_to_target"] for r in reached], 1, 2),
            ]
        row += [_ci([r.get(k) for r in g], scale, digits) for k, _, scale, digits in extra]
        diverged = [r for r in g if r["outcome"] == "diverged"]
        steps = sorted(int(r["diverged_step"]) for r in diverged if r.get("diverged_step") is not None)
        row += [
            f"{len(diverged)}" + (f" (at update {', '.join(map(str, steps))})" if steps else ""),
            " ".join(f"`{r['run_id'][:8]}`" for r in sorted(g, key=lambda r: r["seed"])),
        ]
        rows.append(row)
    return Table(headers, rows)


def tuning_section(tuning: dict[str, Any], groups: dict[str, list[dict[str, Any]]]) -> Section:
    sec = Section("Tuned vs default")
    sec.paragraphs.append(
        "Each tuned technique: an Optuna TPE search over its declared space (objective: final validation "
        "accuracy, median pruning), then the best configuration re-run over the study's seeds and compared on the "
        "test set, paired by seed with the default configuration (trials train with a seed outside that set)."
    )
    rows = []
    for t, info in tuning.items():
        tuned = info.get("runs", [])
        diff = tuned_vs_default(groups.get(t, []), tuned)
        params = ", ".join(f"{k}={_num(v)}" for k, v in info["best_params"].items())
        default = ", ".join(f"{k}={_num(v)}" for k, v in info["default_params"].items() if k in info["best_params"])
        rows.append(
            [
                t,
                f"{info['trials']} ({info['pruned']} pruned)",
                default,
                params,
                f"{100 * info['best_val_acc']:.2f}",
                _ci([r["test_acc"] for r in groups.get(t, [])], 100),
                _ci([r["test_acc"] for r in tuned], 100),
                diff.fmt(100),
                f"`{info['optuna_study']}`",
            ]
        )
    sec.tables.append(
        Table(
            [
                "technique",
                "trials",
                "default",
                "tuned",
                "search val acc %",
                "default test acc %",
                "tuned test acc %",
                "tuned − default (pp)",
                "Optuna study",
            ],
            rows,
        )
    )
    return sec


def _num(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def study_sections(results_dir: Path, figures_dir: Path) -> list[Section]:
    data = json.loads((results_dir / "runs.json").read_text())
    study = data["study"]
    configs = data.get("configs", {})
    family = next(iter(configs.values()), {}).get("family")
    workloads = sorted({r["workload"] for r in data["runs"]}, key=lambda w: _order(configs, w))
    metrics_file = results_dir / "metrics.json"
    bias_variance = json.loads(metrics_file.read_text()).get("bias_variance", {}) if metrics_file.is_file() else {}
    head = Section(f"Study `{study}`")
    if family:
        head.paragraphs.append(
            f"Family `{family}`: {len({c['technique'] for c in configs.values()})} techniques on "
            f"{len(workloads)} workload(s) ({', '.join(f'`{w}`' for w in workloads)}). Cells are mean ± 95% "
            "Student-t CI half-width over seeds; gen. gap = train accuracy (eval mode, end) − test accuracy; "
            "best epoch = epoch of highest validation accuracy; wall time = Lightning fit time per run."
        )
    sections = [head]
    for w in workloads:
        groups = _groups([r for r in data["runs"] if r["workload"] == w])
        own = {k: c for k, c in configs.items() if c.get("workload") == w}
        machines = sorted({r.get("machine", "unknown") for rows in groups.values() for r in rows})
        sec = Section(f"Workload `{w}`", paragraphs=_setup(own, machines))
        if any(r.get("execution") == "vectorized" for rows in groups.values() for r in rows):
            sec.paragraphs.append(
                "Seeds of a configuration were trained together as one vectorized stack (`execution: vectorized`, "
                "the same numbers as one at a time): a run's wall time is the stack's fit time divided by its seeds."
            )
        sec.tables.append(results_table(groups, family))
        if any(r["curves"].get("val/loss") for rows in groups.values() for r in rows):  # restart runs have none
            sec.figures.append(learning_curves(groups, figures_dir / f"{study}_{w}_curves.png", f"{study} / {w}"))
        swept = sweep_plot(groups, figures_dir / f"{study}_{w}_sweep.png", f"{study} / {w}")
        if swept is not None:
            sec.figures.append(swept)
        said = Section(f"What the numbers say (`{w}`)", paragraphs=describe(groups))
        _family_findings(family, groups, bias_variance.get(w, {}), figures_dir / f"{study}_{w}", said)
        sections += [sec, said]
    probes_file = results_dir / "probes.json"
    if probes_file.is_file():
        sections += probe_sections(json.loads(probes_file.read_text()), figures_dir, study)
    tuning_file = results_dir / "tuning.json"
    if tuning_file.is_file():
        tuning = json.loads(tuning_file.read_text())
        if tuning:
            first = workloads[0] if workloads else None
            groups = _groups([r for r in data["runs"] if r["workload"] == first])
            sec = tuning_section(tuning, groups)
            sec.paragraphs.append(f"Tuned and compared on the study's first workload, `{first}`.")
            sections.append(sec)
    return sections


def _family_findings(family: str | None, groups, decomposition: dict, stem: Path, sec: Section) -> None:
    """The study-specific sentences and figures of the generalization families."""
    from techbench.report import generalization as gen

    title = stem.name
    only_none = all(label.split("@")[0] == "none" for label in groups)
    if family == "regularization" and not only_none:
        sec.paragraphs += gen.regularization_lines(groups)
    elif family == "regularization":  # no penalty, swept over model or data: a capacity curve
        lines, fig = gen.capacity_sections(groups, decomposition, stem.with_name(stem.name + "_capacity.png"), title)
        sec.paragraphs += lines or gen.paired_variant_lines(groups) + gen.decomposition_lines(decomposition)
        sec.figures += [fig] if fig else []
    elif family == "early_stopping":
        lines, fig = gen.early_stopping_lines(groups, stem.with_name(stem.name + "_stops.png"), title)
        sec.paragraphs += lines
        sec.figures += [fig] if fig else []
    elif family == "dropout":
        sec.paragraphs += gen.dropout_lines(groups)
    elif family == "restarts":
        from techbench.report.restarts import restart_findings

        lines, figures = restart_findings(groups, stem)
        sec.paragraphs += lines
        sec.figures += figures


def _order(configs: dict[str, Any], workload: str) -> int:
    names = list(dict.fromkeys(c.get("workload") for c in configs.values()))
    return names.index(workload) if workload in names else len(names)


def to_markdown(sections: list[Section], base: Path) -> str:
    out = []
    for i, s in enumerate(sections):
        out.append(("# " if i == 0 else "## ") + s.title + "\n")
        out += [p + "\n" for p in s.paragraphs]
        for t in s.tables:
            out.append("| " + " | ".join(t.headers) + " |")
            out.append("|" + "---|" * len(t.headers))
            out += ["| " + " | ".join(r) + " |" for r in t.rows]
            out.append("")
        out += [f"![{f.stem}]({f.relative_to(base).as_posix()})\n" for f in s.figures]
    return "\n".join(out)


def _inline_md(text: str) -> str:
    parts = html.escape(text).split("`")
    text = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def to_html(sections: list[Section]) -> str:
    out = []
    for i, s in enumerate(sections):
        tag = "h2" if i == 0 else "h3"
        out.append(f"<{tag}>{_inline_md(s.title)}</{tag}>")
        out += [f"<p>{_inline_md(p)}</p>" for p in s.paragraphs]
        for t in s.tables:
            out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in t.headers) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{_inline_md(c)}</td>" for c in r) + "</tr>" for r in t.rows]
            out.append("</table>")
        for f in s.figures:
            b64 = base64.b64encode(f.read_bytes()).decode()
            out.append(f'<img alt="{f.stem}" src="data:image/png;base64,{b64}">')
    return "\n".join(out)


def benchmarks_section(folder: Path) -> Section | None:
    """Speed measurements from `make bench` (benchmarks/results/*.json), shown as they were recorded."""
    files = sorted(folder.glob("*.json"))
    if not files:
        return None
    sec = Section("Benchmarks (`make bench`)")
    for f in files:
        data = json.loads(f.read_text())
        rows = [[k, f"{v:.4g}" if isinstance(v, float) else str(v)] for k, v in data.items()]
        sec.paragraphs.append(f"`{f.name}`")
        sec.tables.append(Table(["measure", "value"], rows))
    return sec


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>techbench report</title><style>
body{{font-family:system-ui,sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:1em 0;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 7px}}
th{{background:#f3f3f3}}img{{max-width:100%}}code{{background:#f5f5f5;padding:0 3px}}</style></head><body>
<h1>techbench report</h1><p>Studies: {toc}. Runs are in MLflow (<code>mlflow ui --backend-store-uri
sqlite:///mlflow.db</code>), tuning studies in Optuna (<code>optuna-dashboard sqlite:///optuna.db</code>).</p>
{body}</body></html>"""


def write_reports(
    results_root: Path = Path("results"), reports_dir: Path = REPORTS_DIR, studies: list[str] | None = None
) -> list[Path]:
    available = sorted(p.parent.name for p in results_root.glob("*/runs.json"))
    for study in studies or []:
        if study not in available:
            raise ConfigError("study", f"no results for {study!r} yet: run `techbench run {study}` first", available)
    studies = studies or available
    figures = reports_dir / "figures"
    written, bodies = [], []
    for study in studies:
        sections = study_sections(results_root / study, figures)
        md = reports_dir / f"{study}.md"
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(to_markdown(sections, reports_dir))
        written.append(md)
        bodies.append(f'<section id="{study}">' + to_html(sections) + "</section>")
    bench = benchmarks_section(Path("benchmarks/results"))
    if bench is not None:
        bodies.append(to_html([bench]))
    toc = ", ".join(f'<a href="#{s}">{s}</a>' for s in studies) or "none"
    index = reports_dir / "index.html"
    index.write_text(PAGE.format(toc=toc, body="\n<hr>\n".join(bodies)))
    return [*written, index]
