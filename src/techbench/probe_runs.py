"""Run a study's probes: each (probe, seed) ends as one RunRecord (kind probe) written through tracking, skipped
when a finished record of the same probe configuration and seed exists; its full result is the record's
payload, so results/<study>/probes.json is rebuilt from MLflow alone (export reads, never re-runs)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any

from techbench import code_version
from techbench.errors import ConfigError
from techbench.probes import PROBES, ProbeContext, run_probe
from techbench.records import RunRecord
from techbench.specs import StudySpec, weights_identity
from techbench.tracking import Tracker

log = logging.getLogger("techbench")


def probe_context(spec: StudySpec, seed: int, hardware: dict[str, Any]) -> ProbeContext:
    """Probes measure on the study's first workload with its fixed components."""
    w = next(iter(spec.workloads.values()))
    return ProbeContext(w.data, w.model, w.train, dict(hardware), dict(spec.fixed), seed)


def probe_hash(spec: StudySpec, name: str, hardware: dict[str, Any]) -> str:
    ctx = probe_context(spec, 0, hardware)
    blob = {
        "probe": spec.probes[name],
        "data": ctx.data,
        "model": ctx.model,
        "train": ctx.train,
        "components": ctx.components,
        "hardware": ctx.hardware,
        "code": code_version(),
        **weights_identity(ctx.model),  # a probe of a source measures those weights
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]


def metric_name(*parts: str) -> str:
    # MLflow metric names allow letters, digits, _ - . / and spaces.
    return "/".join(re.sub(r"[^A-Za-z0-9_\-. ]", "_", p) for p in parts)


def probe_record(spec: StudySpec, name: str, seed: int, chash: str, result: dict[str, Any]) -> RunRecord:
    """A probe's result as a record: numeric row cells as metrics ``<row>/<measure>``, curves as histories."""
    metrics = {
        metric_name(str(row["row"]), k): float(v)
        for row in result["rows"]
        for k, v in row.items()
        if k != "row" and isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    histories = {
        metric_name("curve", label, k): [float(v) for v in values]
        for label, series in result["curves"].items()
        for k, values in series.items()
        if k != "x"
    }
    hp = {k: v for k, v in spec.probes[name].items() if k != "name"}
    tags = {
        "study": spec.name,
        "probe": name,
        "technique": name,
        "seed": str(seed),
        "config_hash": chash,
        "code_version": code_version(),
    }
    return RunRecord(
        study=spec.name,
        name=f"probe/{name}/seed{seed}",
        kind="probe",
        seed=seed,
        tags=tags,
        config={**hp, "seed": seed},
        metrics=metrics,
        histories=histories,
        payload=result,
    )


def run_probes(spec: StudySpec, hardware: dict[str, Any], tracker: Tracker, force: bool = False) -> int:
    """Run every missing (probe, seed); returns how many ran."""
    ran = 0
    for name, hp_spec in spec.probes.items():
        hp = {k: v for k, v in hp_spec.items() if k != "name"}
        chash = probe_hash(spec, name, hardware)
        for seed in range(spec.seeds):
            done = None if force else tracker.finished_run(spec.name, chash, seed)
            if done is not None:
                log.debug("skip probe %s/seed%d: finished as run %s", name, seed, done.info.run_id)
                continue
            try:
                result = run_probe(name, probe_context(spec, seed, hardware), hp).as_dict()
            except ValueError as e:  # an impossible setting the registry's types could not catch
                raise ConfigError(f"{spec.key}.probes.{name}", str(e)) from None
            run_id = tracker.write(probe_record(spec, name, seed, chash, result))
            log.info("probe %s/seed%d: %d rows (%s)", name, seed, len(result["rows"]), run_id)
            ran += 1
    return ran


def probe_results(spec: StudySpec, hardware: dict[str, Any], tracker: Tracker) -> dict[str, Any]:
    """{probe: {description, hp, config_hash, runs: [result + seed + run_id]}} from the finished records."""
    hashes = {name: probe_hash(spec, name, hardware) for name in spec.probes}
    wanted = {(h, s) for h in hashes.values() for s in range(spec.seeds)}
    records = tracker.records(spec.name, "probe", wanted) if spec.probes else {}
    out = {}
    for name, chash in hashes.items():
        runs = [
            {**records[(chash, s)].payload, "seed": s, "run_id": records[(chash, s)].run_id}
            for s in range(spec.seeds)
            if (chash, s) in records
        ]
        hp = {k: v for k, v in spec.probes[name].items() if k != "name"}
        out[name] = {"description": PROBES.get(name).description, "hp": hp, "config_hash": chash, "runs": runs}
    return out
