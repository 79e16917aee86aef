"""One Lightning fit of a model under a run's configuration, shared by the single and the procedure executors:
the in-memory loaders, the Trainer from the ``hardware`` block, every family's callbacks, and what the fit
leaves behind (per-epoch values, epoch times, divergence, the family callbacks for ``select_weights``)."""

from __future__ import annotations

import copy
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from torch import nn

from techbench.specs import EffectiveRun
from techbench.techniques import FAMILIES, OPTIMIZERS, Fit
from techbench.training.memory import peak_step_memory
from techbench.training.module import FitLog, TechniqueModule
from techbench.training.trainer import make_trainer
from techbench.workloads import DataSplits, InMemoryLoader, loss_fn

for _name in ("lightning.pytorch", "lightning.fabric", "lightning"):
    logging.getLogger(_name).setLevel(logging.ERROR)
# Noise that says nothing about a run: we log per epoch on purpose, and a dependency's deprecation.
warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
warnings.filterwarnings("ignore", message=".*LeafSpec.*")
# A diverged step is skipped on purpose by returning None.
warnings.filterwarnings("ignore", message=".*training_step. returned .None.*")


class Loaders(L.LightningDataModule):
    """Hands Lightning in-memory loaders, sharded by the trainer's rank once it is known."""

    def __init__(self, data: DataSplits, batch_size: int, seed: int):
        super().__init__()
        self.data, self.batch_size, self.seed = data, batch_size, seed

    def _loader(self, x, y, shuffle: bool):
        t = self.trainer
        return InMemoryLoader(x, y, self.batch_size, shuffle, self.seed, t.global_rank, t.world_size)

    def train_dataloader(self):
        return self._loader(self.data.x_train, self.data.y_train, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.data.x_val, self.data.y_val, shuffle=False)


@dataclass
class FitResult:
    module: TechniqueModule
    seconds: float
    family_callbacks: dict[str, list] = field(default_factory=dict)

    @property
    def log(self) -> FitLog:
        return self.module.log_

    @property
    def epochs_run(self) -> int:
        return len(self.log.epoch_times)

    def fit_for(self, family: str, run: EffectiveRun, data: DataSplits) -> Fit:
        return Fit(self.module, self.family_callbacks.get(family, []), self.epochs_run, run.as_dict(), data)


def fit(
    run: EffectiveRun,
    model: nn.Module,
    data: DataSplits,
    order_seed: int,
    callbacks: list | None = None,
    reseed: bool = False,
    family_callbacks: bool = True,
) -> FitResult:
    """Train ``model`` in place; batches drawn in the order of ``order_seed``. ``reseed`` seeds the global RNG
    (dropout masks) with ``order_seed`` first, as a procedure's solutions do; a single run has seeded it
    before drawing the model."""
    if reseed:
        L.seed_everything(order_seed, workers=True, verbose=False)
    with tempfile.TemporaryDirectory(prefix="techbench-fit-") as tmp:
        module = TechniqueModule(model, run, FitLog(Path(tmp) / "log.json"))
        config = run.as_dict()
        own = {f.name: f.callbacks(run[f.name], config) for f in FAMILIES} if family_callbacks else {}
        every = [*(callbacks or []), *(c for cbs in own.values() for c in cbs)]
        trainer = make_trainer(run.hardware, run.train, callbacks=every)
        start = time.perf_counter()
        trainer.fit(module, datamodule=Loaders(data, run.train["batch_size"], order_seed))
        seconds = time.perf_counter() - start
        module.log_.load()
        if not module.log_.global_step:
            module.log_.global_step = int(trainer.global_step)
        module.log_.outbox = None
    return FitResult(module, seconds, own)


def step_memory(model: nn.Module, run: EffectiveRun, data: DataSplits) -> dict[str, float]:
    """memory/step_mb at the run's batch size, and memory/step_mb/b<k> for each of ``train.memory_batches``."""
    out = {"memory/step_mb": step_memory_mb(model, run, data)}
    for batch in run.train.get("memory_batches") or []:
        out[f"memory/step_mb/b{batch}"] = step_memory_mb(model, run, data, batch)
    return out


def step_memory_mb(model: nn.Module, run: EffectiveRun, data: DataSplits, batch: int | None = None) -> float:
    """Peak memory of one training step at the run's batch size or ``batch`` (parameters, gradients, optimizer
    state, batch, activations), measured on a copy so the run itself is untouched: CUDA allocator peak on a
    GPU, live tensor bytes on CPU (see training/memory.py). Frozen parameters have no gradient and no
    optimizer state, so parameter-efficient methods show their saving here."""
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[]):
        clone = copy.deepcopy(model)
        optimizer = FAMILIES["optimizer"].build(run["optimizer"], clone)
        batch = batch or run.train["batch_size"]
        x = data.x_train[:batch]
        if len(x) < batch:  # a small training split: repeat it to the asked batch size
            x = x.repeat(-(-batch // len(x)), *([1] * (x.dim() - 1)))[:batch]
        y = data.y_train.repeat(-(-batch // len(data.y_train)))[:batch]
        x, y = x.to(device), y.to(device)
        plain = OPTIMIZERS.get(run["optimizer"]["name"]).info.closure is None

        def step():
            optimizer.zero_grad()
            loss_fn(clone(x), y).backward()
            if plain:  # closure-driven optimizers (L-BFGS, Newton): forward + backward only
                optimizer.step()

        step()  # optimizer state is allocated lazily on the first step
        return peak_step_memory(step, device, resident=[clone, optimizer, x, y]) / 2**20
