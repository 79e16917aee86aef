"""The `techbench` command: list, pretrain, run, tune, report, overlay.

Bad input (unknown keys, unknown techniques, impossible values, missing folders) is reported as one line
naming the key and the allowed values, with exit code 2, before anything is written to MLflow or Optuna.
Each command imports what it uses when it runs (the imports inside the command functions below): `report`
renders results without loading torch, `list` without MLflow or Optuna.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from techbench.errors import ConfigError
from techbench.liveness import is_primary
from techbench.paths import read_paths, study_order

EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="techbench", description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("-q", "--quiet", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="studies in the params file and the registered techniques of each family")

    run = sub.add_parser("run", help="train every technique x seed of a study (finished runs are skipped)")
    run.add_argument("study")
    run.add_argument("--force", action="store_true", help="re-run runs that already finished")

    pre = sub.add_parser("pretrain", help="train and save a source model of params `pretrain:` (transfer studies)")
    pre.add_argument("source")

    tune = sub.add_parser("tune", help="tune a technique's hyperparameters with Optuna")
    tune.add_argument("study")
    tune.add_argument("technique", nargs="?", help="default: the techniques of tuning.<study> in params")
    tune.add_argument("--trials", type=int, help="total trials of the Optuna study (default: params)")
    tune.add_argument("--storage", help="Optuna storage URL (default: $OPTUNA_STORAGE or sqlite:///optuna.db)")
    tune.add_argument("--force", action="store_true", help="re-run tuned evaluation runs that finished")
    tune.add_argument(
        "--workers", type=int, default=1, help="worker processes on this machine sharing the study (one GPU each)"
    )
    tune.add_argument(
        "--trials-only",
        action="store_true",
        help="a worker: run trials until the study's budget is met, leave the evaluation to a plain `tune`",
    )

    rep = sub.add_parser("report", help="write reports/<study>.md and reports/index.html from results/")
    rep.add_argument("study", nargs="?", help="default: every study with results")

    over = sub.add_parser("overlay", help="the params file with an overlay (e.g. configs/full.yaml) merged in")
    over.add_argument("overlay", help="a YAML file holding only what differs from the params file")
    over.add_argument("-o", "--output", help="write the merged file here (e.g. params.yaml) instead of printing")
    return p


def cmd_list(params) -> None:
    from techbench.probes import PROBES
    from techbench.techniques import FAMILIES
    from techbench.workloads import DATASETS, MODELS

    print("studies (params file):")
    for name, spec in (params.studies if params else {}).items():
        what = f"family={spec.family}" if spec.family else "probes only"
        print(
            f"  {name}: {what}, {len(spec.techniques)} techniques on {len(spec.workloads)} workload(s)"
            f" (incl. sweep points: {len(spec.runs)} configs) x {spec.seeds} seeds = {len(spec.runs) * spec.seeds}"
            f" runs; probes: {', '.join(spec.probes) or '-'}"
        )
    families = [(f"family {f.name}: {f.description}", f.registry) for f in FAMILIES]
    for label, registry in [("datasets", DATASETS), ("models", MODELS), *families]:
        print(f"{label}:")
        for e in registry:
            space = f"  [tunable: {', '.join(e.search_space)}]" if e.search_space else ""
            print(f"  {e.name:<16} {e.description}{space}")
    print("probes (measurements; listed under a study's `probes:`):")
    for e in PROBES:
        print(f"  {e.name:<16} [{e.info.topic or '-'}] {e.description}")


def cmd_report(args) -> None:
    from techbench.report.render import write_reports

    paths = read_paths(args.params)
    studies = [args.study] if args.study else None
    order = study_order(args.params)
    for path in write_reports(
        Path(paths["results"]), Path(paths["reports"]), Path(paths["benchmarks"]), studies, order
    ):
        print(f"wrote {path}")


def cmd_overlay(args) -> None:
    from techbench.config import merge, parse_params, read_yaml

    merged = merge(read_yaml(args.params), read_yaml(args.overlay), args.overlay)
    parse_params(merged)  # the merged file must be valid before it is written anywhere
    text = yaml.safe_dump(merged, sort_keys=False, width=120)
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text, end="")


def cmd_run(args, params) -> None:
    from techbench.study import export_study, run_study

    params.study(args.study)
    run_study(params, args.study, force=args.force)
    if is_primary():  # the other ranks of a DDP launch trained in step; rank 0 writes the results
        print(f"results: {export_study(params, args.study)}")


def cmd_pretrain(args, params) -> None:
    from techbench.pretrain import run_pretrain, source

    source(params, args.source)
    print(f"weights: {run_pretrain(params, args.source)}")


def cmd_tune(args, params) -> None:
    _check_tune_args(params, args)
    from techbench.tracking import Tracker
    from techbench.trial_store import storage_url
    from techbench.tuning import tune_study, tuning_parent
    from techbench.workers import check_workers, run_workers

    check_workers(args.workers, params.hardware)
    techniques = [args.technique] if args.technique else None
    if args.workers > 1:
        tracker = Tracker()
        spec = params.study(args.study)
        for t in techniques or params.tuning[args.study].techniques:
            tuning_parent(tracker, spec.run(t))  # before the workers: they all write under these parents
        argv = ["--params", args.params, "-q", "tune", args.study, *(techniques or [])]
        argv += ["--storage", storage_url(args.storage), *(["--trials", str(args.trials)] if args.trials else [])]
        run_workers(argv, args.workers, params.hardware)
    tune_study(params, args.study, techniques, args.trials, args.storage, args.force, trials_only=args.trials_only)


QUIET_LOGGERS = ("mlflow", "alembic", "matplotlib", "optuna", "lightning", "lightning.pytorch")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    for noisy in QUIET_LOGGERS:  # their INFO lines say nothing about the benchmark
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.command == "report":
            cmd_report(args)
        elif args.command == "overlay":
            cmd_overlay(args)
        else:
            from techbench.config import load_params

            if args.command == "list":  # the registries are listed even without a params file
                cmd_list(load_params(args.params) if Path(args.params).is_file() else None)
            else:
                params = load_params(args.params)
                _check_machine(params, args)
                commands = {"run": cmd_run, "tune": cmd_tune, "pretrain": cmd_pretrain}
                commands[args.command](args, params)
    except ConfigError as e:
        print(f"techbench: error in {e.source or args.params}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def _check_machine(params, args) -> None:
    """Before any training command writes anything: the hardware exists here and the stores can be opened."""
    from techbench.tracking import tracking_uri
    from techbench.training.trainer import check_hardware

    check_hardware(params.hardware)
    tracking_uri()
    if args.command == "tune":
        from techbench.trial_store import check_storage
        from techbench.workers import check_tune_hardware

        check_storage(args.storage)
        check_tune_hardware(params.hardware)


def _check_tune_args(params, args) -> None:
    from techbench.config import check_tunable

    spec = params.study(args.study)
    if args.technique and args.technique not in spec.techniques:
        raise ConfigError(
            f"studies.{args.study}.techniques",
            f"{args.technique!r} is not a technique of this study",
            spec.techniques,
        )
    if args.trials is not None and args.trials < 1:
        raise ConfigError("--trials", f"{args.trials} is out of range: must be >= 1")
    techniques = [args.technique] if args.technique else getattr(params.tuning.get(args.study), "techniques", [])
    if not techniques:
        raise ConfigError(
            f"tuning.{args.study}.techniques",
            "nothing to tune: name a technique or list some",
            spec.techniques,
        )
    for t in techniques:  # params' own list is checked when it is parsed; a technique named here is not
        check_tunable(f"tuning.{args.study}.techniques", spec, t)


if __name__ == "__main__":
    sys.exit(main())
