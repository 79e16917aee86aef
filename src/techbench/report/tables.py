"""The tables and setup sentences of a study's report: what trained (the configuration as trained, with the
settings that differ between techniques named per technique), the results table (mean ± 95% CI over seeds,
plus the columns the family declares)."""

from __future__ import annotations

from typing import Any

from techbench.analysis.rows import value
from techbench.analysis.stats import mean_ci
from techbench.analysis.target import fmt_target
from techbench.records import flatten
from techbench.report.document import Table

Groups = dict[str, list[dict[str, Any]]]
SECTIONS = ("data", "model", "train", "hardware")
NOT_SETTINGS = {
    "study",
    "family",
    "technique",
    "variant",
    "workload",
    "sweep",
    "config_hash",
    "seeds",
    "code_version",
    "trained",
    "info",
    "n_train",
    "input_shape",
    "num_classes",
    "seed",
    "n_params",
}


def ci(values, scale: float = 1.0, digits: int = 2) -> str:
    est = mean_ci([v for v in values if v is not None])
    return est.fmt(scale, digits) if est.n else "–"


def _fmt(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items() if k != "name")


def _varying(configs: dict[str, Any]) -> set[str]:
    """Flattened settings whose value differs between the workload's configurations."""
    flat = [flatten({k: v for k, v in c.items() if k not in NOT_SETTINGS}) for c in configs.values()]
    keys = set().union(*flat) if flat else set()
    return {k for k in keys if len({repr(f.get(k)) for f in flat}) > 1}


def setup_lines(configs: dict[str, Any], machines: list[str]) -> list[str]:
    """Workload, training, fixed components and hardware shared by the workload's configurations, then each
    technique's own settings as trained (after every family's resolve: batch regime, widened model)."""
    if not configs:
        return []
    c = next(iter(configs.values()))
    varying = _varying(configs)
    family = c["family"]

    def shared(section: str) -> str:
        return _fmt({k: v for k, v in c[section].items() if f"{section}.{k}" not in varying})

    fixed = [
        f"{s} `{c[s]['name']}` ({_fmt(c[s])})"
        for s in c.get("info", {})
        if s != family and s in c and not any(k.startswith(f"{s}.") for k in varying)
    ]
    lines = [
        f"Workload `{c['workload']}`: data `{c['data']['name']}` ({shared('data')}); model `{c['model']['name']}` "
        f"({shared('model')}).",
        f"Training (every technique): {shared('train')}; {c['seeds']} seeds (0..{c['seeds'] - 1}), paired: the same "
        "seed gives every technique the same initialization and batch order. Fixed components: "
        + ("; ".join(fixed) or "none")
        + ".",
        f"Hardware: accelerator={c['hardware']['accelerator']}, devices={c['hardware']['devices']}, precision="
        f"{c['hardware']['precision']} on {'; '.join(machines) or 'an unrecorded machine'} (as recorded by the "
        f"runs); code version {c['code_version']}.",
        "Technique settings as trained: "
        + "; ".join(_as_trained(key, cfg, family, varying) for key, cfg in configs.items())
        + ".",
    ]
    return lines + _footnotes(configs)


def _as_trained(key: str, cfg: dict[str, Any], family: str, varying: set[str]) -> str:
    own = _fmt(cfg[family]) or "no hyperparameters"
    other = {
        k: v
        for k, v in flatten({s: cfg[s] for s in cfg if s not in NOT_SETTINGS}).items()
        if k in varying and not k.startswith(f"{family}.")
    }
    extra = "; " + ", ".join(f"{k}={v}" for k, v in sorted(other.items())) if other else ""
    return f"`{key.split('/', 1)[1]}` ({own}{extra})"


def _footnotes(configs: dict[str, Any]) -> list[str]:
    full = sorted(
        {c["optimizer"]["name"] for c in configs.values() if c.get("info", {}).get("optimizer", {}).get("full_batch")}
    )
    if not full:
        return []
    return [
        f"Note on {', '.join(f'`{n}`' for n in full)}: full-batch methods make one update per epoch, and an "
        "L-BFGS update runs up to max_iter inner iterations with a line search (many loss and gradient "
        "evaluations), so their epochs are not comparable with mini-batch epochs: compare seconds to target."
    ]


MAIN = ["technique", "n", "val acc % (kept)", "test acc %", "gen. gap pp", "test loss", "diverged"]


def results_tables(groups: Groups, columns: list[dict[str, Any]]) -> list[Table]:
    """Two tables, rows ordered by validation accuracy of the kept weights: the columns that decide a
    comparison, then the details (losses, epochs, time, time to target, the family's own columns, the runs)."""
    has_target = any("epochs_to_target" in r for rows in groups.values() for r in rows)
    order = sorted(groups, key=lambda t: -_mean(groups[t], "val_acc"))
    details = ["technique (details)", "final val loss", "best epoch", "wall time s"]
    if has_target:
        details += ["epochs to target", "updates to target", "seconds to target"]
    details += [c["header"] for c in columns] + ["MLflow runs"]
    return [
        Table(MAIN, [_main_row(t, groups[t]) for t in order]),
        Table(details, [_detail_row(t, groups[t], columns, has_target) for t in order]),
    ]


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    est = mean_ci([r.get(key) for r in rows if r.get(key) is not None])
    return est.mean if est.n else float("-inf")


def _main_row(label: str, g: list[dict[str, Any]]) -> list[str]:
    diverged = [r for r in g if r["outcome"] == "diverged"]
    steps = sorted(int(r["diverged_step"]) for r in diverged if r.get("diverged_step") is not None)
    return [
        label,
        str(len(g)),
        ci([r.get("val_acc") for r in g], 100),
        ci([r["test_acc"] for r in g], 100),
        ci([r.get("gen_gap") for r in g], 100),
        # A diverged run's loss is not an average-able number; its accuracy (chance or worse) is.
        ci([r["test_loss"] for r in g if r["outcome"] != "diverged"], 1, 3),
        f"{len(diverged)}" + (f" (at update {', '.join(map(str, steps))})" if steps else ""),
    ]


def _detail_row(label: str, g: list[dict[str, Any]], columns: list[dict[str, Any]], has_target: bool) -> list[str]:
    row = [
        label,
        ci([r["final_val_loss"] for r in g if r["outcome"] != "diverged"], 1, 3),
        ci([r["best_epoch"] for r in g], 1, 1),
        ci([r["fit_s"] for r in g], 1, 1),
    ]
    if has_target:
        row += [fmt_target(g, "epochs", 1), fmt_target(g, "updates", 0), fmt_target(g, "seconds", 2)]
    row += [ci([value(r, c["metric"]) for r in g], c["scale"], c["digits"]) for c in columns]
    return row + [" ".join(f"`{r['run_id'][:8]}`" for r in sorted(g, key=lambda r: r["seed"]))]


def _num(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
