"""The pretrain stage: train one source model of params.yaml `pretrain:` (a Lightning run like every other,
logged to MLflow experiment ``pretrain``), keep its best-validation weights, and save them where the transfer
studies load them from: <paths.models>/<name>/model.safetensors and card.json (the model card).

The card says what the weights are: architecture, source data with its generator parameters, training, seed,
source accuracy, code version, config hash, MLflow run and the file's sha256. A run already finished with the
same configuration (and its file intact) is not trained again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from techbench import code_version
from techbench.errors import ConfigError
from techbench.liveness import is_primary
from techbench.paths import file_sha256
from techbench.specs import Params, SourceSpec
from techbench.tracking import Tracker
from techbench.training.single import train_single
from techbench.workloads.pretrained import CARD, classifier_prefix

log = logging.getLogger("techbench")


def source(params: Params, name: str) -> SourceSpec:
    if name not in params.pretrain:
        raise ConfigError("pretrain", f"unknown source {name!r}", sorted(params.pretrain))
    return params.pretrain[name]


def current(src: SourceSpec) -> bool:
    """Whether the saved weights are this configuration's (card and file intact)."""
    card = Path(src.weights).with_name(CARD)
    if not card.is_file():
        return False
    info = json.loads(card.read_text())
    return info.get("config_hash") == src.run.config_hash() and info.get("sha256") == file_sha256(src.weights)


def run_pretrain(params: Params, name: str, tracker: Tracker | None = None) -> Path:
    """Train (unless current) and save the source ``name``; returns the weights file."""
    from safetensors.torch import save_file

    src = source(params, name)
    if current(src):
        log.info("pretrain %s: %s is current", name, src.weights)
        return Path(src.weights)
    tracker = tracker or Tracker()
    result = train_single(src.run, src.seed)
    run_id = tracker.write(result.record("run", source=name))
    out = Path(src.weights)
    if not is_primary():  # another rank of a DDP launch: the same weights, written by rank 0
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}, str(tmp))
    os.replace(tmp, out)  # a finished file or none: an interrupted stage leaves no half-written weights
    cfg = src.run
    card = {
        "name": name,
        "architecture": cfg.model,
        "data": cfg.data,
        "train": cfg.train,
        "optimizer": cfg.components["optimizer"],
        "seed": src.seed,
        "epochs_run": int(result.metrics["epochs_run"]),
        "best_epoch": int(result.metrics.get("stop/best_epoch", result.metrics["epochs_run"])),
        "test_acc": result.metrics["test/acc"],
        "val_acc": result.metrics["val/kept_acc"],
        "num_classes": int(result.model.state_dict()[_head_weight(result.model)].shape[0]),
        "parameters": sum(p.numel() for p in result.model.parameters()),
        "code_version": code_version(),
        "config_hash": cfg.config_hash(),
        "mlflow_run_id": run_id,
        "file": out.name,
        "sha256": file_sha256(out),
    }
    out.with_name(CARD).write_text(json.dumps(card, indent=2) + "\n")
    log.info("pretrain %s: test acc %.4f, saved %s", name, card["test_acc"], out)
    return out


def _head_weight(model) -> str:
    return f"{classifier_prefix(model)}.weight"
