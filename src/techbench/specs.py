"""The typed shapes of a benchmark's configuration, from params.yaml to the configuration that actually trains.

  RunConfig     one technique x sweep point x workload of a study, as params.yaml asks for it (seed excluded);
                its hash (with the code version) is the run's identity
  EffectiveRun  the RunConfig as it trains: every family's ``resolve`` applied (batch regime, full-batch rule,
                widened model), the training-set size known; computed once per run (training/effective.py),
                logged as the run's params and stored in its record, read back by analysis and report
  Workload      data, model, training defaults, loss and target (metric and value) of a study's workload
  StudySpec     one block of params.yaml `studies:` (or `transfer:`); TuningSpec one block of `tuning:`;
                SourceSpec one block of `pretrain:`; Params the whole file

Nothing here imports torch or a registry: results, analysis and report read these shapes as plain data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

from techbench import code_version
from techbench.errors import ConfigError
from techbench.paths import file_sha256

IDENTITY = ("study", "family", "technique", "variant", "workload")
HARDWARE_DEFAULTS: dict[str, Any] = {
    "accelerator": "cpu",
    "devices": 1,
    "num_nodes": 1,
    "strategy": "auto",
    "precision": "32-true",
    "deterministic": True,
}
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 20,
    "batch_size": 128,
    "accumulate_grad_batches": 1,
    "grad_clip": 0.0,  # 0 = no clipping
    # A training loss above this (or NaN/inf) marks the run as diverged; it stops and is recorded.
    "divergence_loss": 1.0e3,
    "target_val_acc": 0.0,  # time-to-target is reported when > 0
    "save_predictions": False,  # log test-set probabilities (an artifact) for bias²/variance over seeds
    # Also measure one training step's peak memory at these batch sizes (memory/step_mb/b<k>): memory vs batch
    # for parameter-efficient methods, whose saving shrinks as activations grow with the batch.
    "memory_batches": [],
}


def weights_identity(model: dict[str, Any], components: dict[str, dict[str, Any]] | None = None) -> dict[str, str]:
    """What weights files add to the identity of a run or probe: the sha256 of the model's ``pretrained_file``
    and of every component's ``*_file`` (a distillation teacher), so a retrained source re-runs what uses it;
    nothing for a fresh initialization."""
    out = {"weights": file_sha256(model["pretrained_file"])} if model.get("pretrained_file") else {}
    for slot, spec in (components or {}).items():
        for k, v in spec.items():
            if k.endswith("_file") and v:
                out[f"{slot}.{k}"] = file_sha256(v)
    return out


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run's numbers except the seed."""

    study: str
    family: str  # the varied family; also the slot of `components` its technique fills
    technique: str
    data: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]
    components: dict[str, dict[str, Any]]  # slot -> component, e.g. {"optimizer": {...}, "schedule": {...}}
    hardware: dict[str, Any]
    variant: str = "default"  # "default", "tuned", "trial<k>", or a sweep point's label such as "lr=0.01"
    workload: str = "default"
    sweep: dict[str, Any] = field(default_factory=dict)  # the sweep point as data: {"optimizer.lr": 0.01}

    @property
    def label(self) -> str:
        return self.technique if self.variant == "default" else f"{self.technique}@{self.variant}"

    def as_dict(self) -> dict[str, Any]:
        return {
            **{k: getattr(self, k) for k in IDENTITY},
            "sweep": dict(self.sweep),
            "data": self.data,
            "model": self.model,
            "train": self.train,
            **self.components,
            "hardware": self.hardware,
        }

    def config_hash(self) -> str:
        """Identity of the run's configuration and of the code that runs it (seed excluded); a run that starts
        from a weights file also depends on the file's bytes (a retrained source re-runs its transfer runs)."""
        ident = {"config": self.as_dict(), "code": code_version(), **weights_identity(self.model, self.components)}
        blob = json.dumps(ident, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def with_technique_params(self, hp: dict[str, Any], variant: str) -> RunConfig:
        comps = dict(self.components)
        comps[self.family] = {**comps[self.family], **hp}
        return replace(self, components=comps, variant=variant, sweep={})


@dataclass(frozen=True)
class EffectiveRun:
    """A RunConfig as it trains (see the module docstring). ``components`` hold every slot as it trains; the
    varied family's slot is ``config.family``."""

    config: RunConfig
    data: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]
    components: dict[str, dict[str, Any]]
    hardware: dict[str, Any]
    n_train: int
    input_shape: tuple[int, ...]
    num_classes: int

    @classmethod
    def from_dict(cls, config: RunConfig, resolved: dict[str, Any], data_shape: tuple, n_train: int, classes: int):
        sections = {"data", "model", "train", "hardware", "sweep", *IDENTITY}
        comps = {k: v for k, v in resolved.items() if k not in sections}
        return cls(
            config,
            resolved["data"],
            resolved["model"],
            resolved["train"],
            comps,
            resolved["hardware"],
            int(n_train),
            tuple(data_shape),
            int(classes),
        )

    def __getitem__(self, slot: str) -> dict[str, Any]:
        return self.components[slot]

    @property
    def world_size(self) -> int:
        """Devices × nodes as configured; ``devices: -1`` (all) counts as one, as the count is only known to the
        Trainer on the machine (runs on all devices record Lightning's own update count in ``updates``)."""
        devices = self.hardware["devices"]
        return max(int(devices), 1) * int(self.hardware["num_nodes"])

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer updates per epoch: a device's batches, one update per ``accumulate_grad_batches`` of them
        and one for a shorter remainder at the epoch's end (as Lightning steps)."""
        per_rank = self.n_train // self.world_size if self.world_size > 1 else self.n_train
        batches = -(-per_rank // min(self.train["batch_size"], max(per_rank, 1)))
        return max(-(-batches // self.train["accumulate_grad_batches"]), 1)

    def as_dict(self) -> dict[str, Any]:
        """The nested configuration (the shape family hooks and params.yaml use) plus what the data told."""
        return {
            **self.config.as_dict(),
            "data": self.data,
            "model": self.model,
            "train": self.train,
            **self.components,
            "hardware": self.hardware,
            "n_train": self.n_train,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
        }

    def replace(self, train: dict[str, Any] | None = None, **components: dict[str, Any]) -> EffectiveRun:
        """A copy with training settings and/or components changed (a procedure's shorter fits, its schedule)."""
        return replace(self, train={**self.train, **(train or {})}, components={**self.components, **components})


@dataclass(frozen=True)
class Workload:
    """The workload contract: data, model, the training defaults of its runs, the loss, and the target."""

    name: str
    data: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]
    loss: str = "cross_entropy"
    target_metric: str = "val/acc"

    @property
    def target_value(self) -> float:
        """The validation accuracy time-to-target is measured against (0: no target)."""
        return float(self.train.get("target_val_acc", 0.0))


@dataclass(frozen=True)
class StudySpec:
    name: str
    family: str | None  # None for a study made only of probes
    techniques: list[str]
    seeds: int
    runs: list[RunConfig]  # technique x sweep point x workload, in params order
    workloads: dict[str, Workload] = field(default_factory=dict)
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)  # probe -> resolved hyperparameters
    fixed: dict[str, dict[str, Any]] = field(default_factory=dict)  # the components of slots not varied
    execution: str = "sequential"  # or "vectorized": the seeds of a config trained as one stack
    baselines: dict[str, str] = field(default_factory=dict)  # workload -> the label the others are tested against
    section: str = "studies"  # the params.yaml block it came from: studies, or transfer (studies with a source)
    source: str | None = None  # transfer studies: the pretrain entry whose weights every run starts from
    source_weights: str | None = None  # its weights file (a student study's teacher)

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    def run(self, technique: str, workload: str | None = None) -> RunConfig:
        """The default (unswept) config of a technique on a workload (default: its first workload)."""
        for r in self.runs:
            default = r.variant == "default" or not any(x.variant == "default" for x in self.runs)
            if r.technique == technique and (workload is None or r.workload == workload) and default:
                return r
        raise ConfigError(f"{self.key}.techniques", f"no run of {technique!r}", self.techniques)


@dataclass(frozen=True)
class TuningSpec:
    study: str
    techniques: list[str]
    trials: int
    sampler_seed: int
    seed: int  # the training seed every trial uses
    eval_seeds: int  # the tuned config is re-run over this many seeds (0 = the study's seeds)
    stack: int = 1  # trials trained together as one stack
    trial_seeds: int = 1  # seeds per trial; the trial's score is their mean
    sampler: str = "tpe"  # tpe (constant liar), random, qmc
    budgets: dict[str, int] = field(default_factory=dict)  # budget name -> trials (nested prefixes of one study)
    heartbeat: int = 10  # seconds between a running trial's heartbeats (trial_store.py)


@dataclass(frozen=True)
class SourceSpec:
    """One block of params.yaml `pretrain:`: a source model trained by the pretrain stage (one run, one seed)
    and saved to ``weights`` (safetensors) with a model card next to it."""

    name: str
    run: RunConfig
    seed: int
    weights: str  # <paths.models>/<name>/model.safetensors


@dataclass(frozen=True)
class Params:
    hardware: dict[str, Any]
    studies: dict[str, StudySpec]  # the `studies:` blocks, then the `transfer:` blocks
    tuning: dict[str, TuningSpec] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    pretrain: dict[str, SourceSpec] = field(default_factory=dict)

    def study(self, name: str) -> StudySpec:
        if name not in self.studies:
            raise ConfigError("study", f"unknown study {name!r}", sorted(self.studies))
        return self.studies[name]
