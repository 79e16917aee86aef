"""The stacked executor: K members — the seeds of one run config (``execution: vectorized``), or Optuna trials ×
seeds (trials.py) — trained at once in one process.

Each member is drawn exactly as the single executor draws it (seed, data, model, then its dropout stream), and one
Lightning Trainer fits them together as a StackedModule (stack_module.py): every member a row of one (K, P)
parameter, its own batches (its own shuffling seed), its own hyperparameters (stacked_optim.py, with the optimizer
entry's stacked rule). The loss is the sum of the members' mean losses, so each row receives exactly its own
gradient and follows the trajectory it would follow alone; the tests check this entry by entry against the
single executor. After fit the stack is split back into K models, each evaluated by the same post-fit evaluation
and recorded as its own run (tag execution=vectorized), indistinguishable in the reports.

Whether members can share a stack is read from their registry entries (``unstackable``, ``members_unstackable``):
every family's answer, the optimizer's stacked rule, the model's ``stackable`` flag, no global gradient clipping,
one device, one architecture.
"""

from __future__ import annotations

import time

import lightning as L
import torch
from torch import nn

from techbench.specs import EffectiveRun, RunConfig
from techbench.techniques import FAMILIES, Fit
from techbench.training.effective import build_run_model, resolve
from techbench.training.evaluation import measure, select_weights, throughput
from techbench.training.fit import step_memory
from techbench.training.result import RunResult
from techbench.training.stack_module import StackedModule
from techbench.training.trainer import make_trainer
from techbench.workloads import DataSplits, InMemoryLoader, load_dataset
from techbench.workloads.data import epoch_order
from techbench.workloads.models import MODELS


def unstackable(run: EffectiveRun, data: DataSplits | None = None, model: nn.Module | None = None) -> str | None:
    """None if the run's seeds can be trained as one stack, else the reasons they cannot: each family's own
    answer, and — whatever a family answers — any callbacks or objective terms it would add, which the stack
    does not apply (asked of ``model``, or with ``data`` of a model built off the run's random stream)."""
    config = run.as_dict()
    if model is None and data is not None:
        with torch.random.fork_rng(devices=[]):
            model = build_run_model(run, data)
    reasons = [_refusal(f, run[f.name], config, model, run.n_train) for f in FAMILIES]
    if not MODELS.get(run.model["name"]).info.stackable:
        reasons.append(f"model {run.model['name']}")
    if run.train["grad_clip"]:
        reasons.append("grad_clip (a global norm would mix seeds)")
    if run.world_size != 1 or run.hardware["devices"] == -1:
        reasons.append("several devices")
    failed = [r for r in reasons if r]
    return None if not failed else "not stackable: " + ", ".join(failed)


def _refusal(family, spec: dict, config: dict, model, n_train: int) -> str | None:
    """Why ``family``'s component keeps seeds from sharing a stack: its own answer, else callbacks without a
    stack-member form, or objective terms computed from one model (per-parameter penalties, decay and proximal
    steps a stack applies per member)."""
    said = family.unstackable(spec, config)
    if said is None and family.member_callbacks(spec, config) is None:
        said = f"{family.name} {spec['name']} (callbacks of one model)"
    if said is None and model is not None:
        objective = family.objective(spec, model, n_train)
        if objective is not None and objective.one_model:
            said = f"{family.name} {spec['name']} (objective terms of one model)"
    return said


class StackedLoader:
    """One batch per seed, stacked: (K, B, ...) inputs and (K, B) labels. Seed k draws from its own training
    set (resampled subsets and label noise differ by seed) in its own order (the permutation InMemoryLoader
    would draw for that seed), gathered with one indexing operation per step."""

    def __init__(self, xs: list, ys: list, batch_size: int, seeds: list[int], shuffle: bool):
        self.same = all(x is xs[0] for x in xs)  # one shared training set: index it without stacking copies
        self.x = xs[0] if self.same else torch.stack(xs)
        self.y = ys[0] if self.same else torch.stack(ys)
        self.n, self.seeds, self.shuffle = len(xs[0]), seeds, shuffle
        self.batch_size = min(batch_size, self.n)
        self.per_rank = self.n  # one process: every example is this rank's (InMemoryLoader's name)
        self.rows = torch.arange(len(seeds)).unsqueeze(1)
        self.epoch = 0

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self):
        order = torch.stack([epoch_order(self.n, seed, self.epoch, self.shuffle) for seed in self.seeds])
        self.epoch += 1
        for i in range(len(self)):
            idx = order[:, i * self.batch_size : (i + 1) * self.batch_size]
            yield (self.x[idx], self.y[idx]) if self.same else (self.x[self.rows, idx], self.y[self.rows, idx])


class StackedData(L.LightningDataModule):
    def __init__(self, datas: list[DataSplits], batch_size: int, seeds: list[int]):
        super().__init__()
        self.datas, self.batch_size, self.seeds = datas, batch_size, seeds

    def train_dataloader(self):
        xs, ys = [d.x_train for d in self.datas], [d.y_train for d in self.datas]
        return StackedLoader(xs, ys, self.batch_size, self.seeds, shuffle=True)

    def val_dataloader(self):  # validation and test splits are shared by every seed
        return InMemoryLoader(self.datas[0].x_val, self.datas[0].y_val, self.batch_size, shuffle=False)


class MemberFit:
    """What a family's ``select_weights`` sees of one stack member's fit: the member's model inside a module (state
    dict keys ``model.…``, as the single executor's module has), its stand-in callbacks, the epochs it trained."""

    def __init__(self, model: nn.Module, callbacks: dict[str, list], epochs_run: int):
        self.module, self.callbacks, self.epochs_run = nn.ModuleDict({"model": model}), callbacks, epochs_run

    def fit_for(self, family: str, run: EffectiveRun, data: DataSplits) -> Fit:
        return Fit(self.module, self.callbacks.get(family, []), self.epochs_run, run.as_dict(), data)


def train_stacked(cfg: RunConfig, seeds: list[int], data: DataSplits | None = None) -> list[RunResult]:
    """Train ``seeds`` of ``cfg`` as one stack; one result per seed, as the single executor would give it.
    ``data``: one dataset for every seed (a procedure's), instead of each seed's own draw."""
    return train_members([(cfg, seed) for seed in seeds], data)


def _draw(members: list[tuple[RunConfig, int]], data: DataSplits | None):
    """Each member's data, effective run, model and dropout stream, drawn exactly as the single executor draws
    them: seed, data, model; the global stream after that is what its dropout masks would be drawn from."""
    datas, runs, models, streams, cache = [], [], [], [], {}
    for cfg, seed in members:
        L.seed_everything(seed, workers=True, verbose=False)
        key = (repr(sorted(cfg.data.items())), seed)
        if data is None and key not in cache:
            cache[key] = load_dataset(cfg.data, seed)
        datas.append(data if data is not None else cache[key])
        runs.append(resolve(cfg, datas[-1]))
        models.append(build_run_model(runs[-1], datas[-1]))
        streams.append(torch.Generator().set_state(torch.get_rng_state()))
    return datas, runs, models, streams


def refusal(members: list[tuple[RunConfig, int]], data: DataSplits | None = None) -> str | None:
    """Why the (config, seed) ``members`` cannot share one stack, or None; drawn off the global random stream."""
    with torch.random.fork_rng(devices=[]):
        _, runs, models, _ = _draw(members, data)
    return members_unstackable(runs, models)


def members_unstackable(runs: list[EffectiveRun], models: list[nn.Module]) -> str | None:
    """None if the members can share one stack: each run stackable, and the runs equal but for their seed and the
    hyperparameters of their optimizer, schedule, penalty, stopping rule, batch regime (as resolved: the same batch
    size) and dropout (one architecture; a dropout rate varies per member only in the batched-matrix path)."""
    why = unstackable(runs[0], model=models[0])
    if why is not None:
        return why
    shapes = [[(n, tuple(p.shape)) for n, p in m.named_parameters()] for m in models]
    if any(s != shapes[0] for s in shapes):
        return "not stackable: the members' models differ in architecture"
    trains = [[p.requires_grad for p in m.parameters()] for m in models]
    if any(t != trains[0] for t in trains):
        return "not stackable: the members differ in which parameters train"
    # A batch regime's own hyperparameters (a tuned lr) have landed in train and optimizer by resolve, which
    # are compared (train) or per member (optimizer): its name alone must agree.
    varying = ("optimizer", "schedule", "regularizer", "stopping", "batching") + (
        ("dropout",) if all(isinstance(m, nn.Sequential) for m in models) else ()
    )
    shared = [_shared_part(run, varying) for run in runs]
    if any(s != shared[0] for s in shared):
        return (
            "not stackable: the members differ in more than the hyperparameters of their optimizer, schedule,"
            " penalty, stopping rule or dropout"
        )
    return next((w for w in (unstackable(r, model=m) for r, m in zip(runs[1:], models[1:], strict=True)) if w), None)


def _shared_part(run: EffectiveRun, varying: tuple[str, ...]) -> dict:
    config = run.as_dict()
    for key in ("variant", "sweep", *varying):
        config[key] = config[key]["name"] if key in varying else None
    return config


def train_members(
    members: list[tuple[RunConfig, int]], data: DataSplits | None = None, epoch_hooks: list | None = None
) -> list[RunResult]:
    """Train the (config, seed) ``members`` as one stack (``members_unstackable`` says whether they can); one result
    per member, as the single executor would give it. ``epoch_hooks`` see every member's epoch values and may stop
    members (a pruned trial)."""
    datas, runs, models, streams = _draw(members, data)
    watchers = [{f.name: f.member_callbacks(run[f.name], run.as_dict()) or [] for f in FAMILIES} for run in runs]
    module = StackedModule(models, runs, streams, [[c for cbs in w.values() for c in cbs] for w in watchers])
    module.epoch_hooks.extend(epoch_hooks or [])
    trainer = make_trainer(runs[0].hardware, runs[0].train)
    start = time.perf_counter()
    trainer.fit(module, datamodule=StackedData(datas, runs[0].train["batch_size"], [s for _, s in members]))
    fit_s = time.perf_counter() - start
    k, memory = len(members), step_memory(models[0], runs[0], datas[0])
    results = []
    for i, model in enumerate(module.unstacked(models)):
        history = module.member_history(i)
        epochs = len(history.get("lr", []))
        updates = module.diverged_step[i] if module.diverged_step[i] is not None else epochs * runs[i].steps_per_epoch
        shared = {  # per member, with the stack's time amortized over its K members
            "time/fit_s": fit_s / k,
            "epochs_run": float(epochs),
            **throughput(runs[i], min(updates, trainer.global_step), epochs, fit_s, stack=k),
            **memory,
            "vectorized_k": float(k),
        }
        # The global stream where the member's sequential run leaves it (after its dropout draws): Monte-Carlo
        # evaluation then samples as that run does.
        torch.set_rng_state(streams[i].get_state())
        for callback in (c for cbs in watchers[i].values() for c in cbs if hasattr(c, "finish")):
            callback.finish(epochs)
        metrics = select_weights(runs[i], datas[i], MemberFit(model, watchers[i], epochs))
        measured, probs = measure(runs[i], model, datas[i])
        metrics.update({**measured, **shared})
        result = RunResult.ended(
            runs[i],
            members[i][1],
            metrics,
            history,
            module.diverged_step[i],
            model,
            (probs, datas[i].y_test),
            execution="vectorized",
        )
        result.stop_reason = module.stop_reason[i]
        results.append(result)
    return results
