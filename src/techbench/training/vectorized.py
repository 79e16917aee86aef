"""K seeds of one run config trained at once in one process (``execution: vectorized``).

The K models' parameters are stacked along a new leading dimension (torch.func.stack_module_state) and one
Lightning Trainer fits them together: the forward pass is torch.func.vmap over the stack (dropout draws
different masks per seed: randomness="different"), each seed gets its own batches (its own shuffling seed), and
the loss is the sum of the per-seed mean losses, so each seed's parameters receive exactly its own gradient.
With an element-wise optimizer (SGD, momentum, Adam, ...) every seed then follows the trajectory it would
follow alone; the tests check this against sequential runs. After fit the stack is split back into K models,
each evaluated and logged as its own MLflow run (tag execution=vectorized), indistinguishable in the reports.

Not every config can be stacked: optimizers with per-layer norms (LARS, LAMB, gradient centralization,
L-BFGS, Newton), global gradient clipping, penalties and stopping rules that look at one model, ReduceLROnPlateau,
recurrent models and multi-device strategies run sequentially instead (``vectorizable`` says why).
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from techbench.config import RunConfig
from techbench.techniques.batching import apply_batching
from techbench.tracking import Tracker, flatten
from techbench.training.evaluation import evaluate, post_fit_metrics
from techbench.training.run import RunResult, _log_predictions, build_run_model, run_name, run_tags
from techbench.training.trainer import make_trainer
from techbench.workloads import InMemoryLoader, load_dataset
from techbench.workloads.data import epoch_order

log = logging.getLogger("techbench")

ELEMENTWISE_OPTIMIZERS = {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "radam"}
STACKABLE_MODELS = {"mlp", "cnn1d", "logreg"}
STACKABLE_DROPOUT = {"none", "standard", "mc_dropout", "width_scaled", "spatial"}


def vectorizable(cfg: RunConfig, n_train: int) -> str | None:
    """None if the config's seeds can be trained as one stack, else the reason they cannot."""
    config = apply_batching(cfg.as_dict(), n_train)
    checks = [
        (config["optimizer"]["name"] in ELEMENTWISE_OPTIMIZERS, f"optimizer {config['optimizer']['name']}"),
        (config["model"]["name"] in STACKABLE_MODELS, f"model {config['model']['name']}"),
        (config["dropout"]["name"] in STACKABLE_DROPOUT, f"dropout {config['dropout']['name']}"),
        (config["regularizer"]["name"] == "none", f"regularizer {config['regularizer']['name']}"),
        (config["stopping"]["name"] == "fixed_budget", f"stopping {config['stopping']['name']}"),
        (config["schedule"]["name"] != "plateau", "schedule plateau (one validation loss per seed)"),
        (not config["train"]["grad_clip"], "grad_clip (a global norm would mix seeds)"),
        (cfg.hardware["devices"] == 1 and cfg.hardware["num_nodes"] == 1, "several devices"),
    ]
    failed = [why for ok, why in checks if not ok]
    return None if not failed else "not stackable: " + ", ".join(failed)


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


class _Data(L.LightningDataModule):
    def __init__(self, datas: list, batch_size: int, seeds: list[int]):
        super().__init__()
        self.datas, self.batch_size, self.seeds = datas, batch_size, seeds

    def train_dataloader(self):
        xs, ys = [d.x_train for d in self.datas], [d.y_train for d in self.datas]
        return StackedLoader(xs, ys, self.batch_size, self.seeds, shuffle=True)

    def val_dataloader(self):  # validation and test splits are shared by every seed
        return InMemoryLoader(self.datas[0].x_val, self.datas[0].y_val, self.batch_size, shuffle=False)


class VectorizedModule(L.LightningModule):
    def __init__(self, models: list[nn.Module], config: dict[str, Any]):
        super().__init__()
        self.cfg = config
        self.k = len(models)
        params, buffers = stack_module_state(models)
        self.names = list(params)
        # ParameterDict keys may not contain dots; the stacked tensors keep the module's own names in self.names.
        self.stack = nn.ParameterDict({n.replace(".", "/"): nn.Parameter(p) for n, p in params.items()})
        self.stacked_buffers = buffers
        self.base = [copy.deepcopy(models[0]).to("meta")]  # a list: not registered as a submodule
        self.plan = _sequential_plan(models[0]) if not buffers else None
        self.history: list[dict[str, torch.Tensor]] = []  # per epoch: metric -> (K,) values
        self._sums: dict[str, torch.Tensor] = {}
        self._epoch_start = 0.0
        self.epoch_times: list[float] = []

    def _params(self) -> dict[str, torch.Tensor]:
        return {n: self.stack[n.replace(".", "/")] for n in self.names}

    def _forward(self, x: torch.Tensor, shared_input: bool) -> torch.Tensor:
        if self.plan is not None:
            return self._forward_sequential(x.expand(self.k, *x.shape) if shared_input else x)

        def one(params, buffers, xi):
            return functional_call(self.base[0], (params, buffers), (xi,))

        in_dims = (0, 0, None if shared_input else 0)
        return vmap(one, in_dims=in_dims, randomness="different")(self._params(), self.stacked_buffers, x)

    def _forward_sequential(self, x: torch.Tensor) -> torch.Tensor:
        """The fast path for plain nn.Sequential stacks (Flatten, Linear, activations, Dropout): batched
        matrix products on the stacked weights, without vmap's per-call tracing. The same function per seed."""
        h = x
        for op, arg in self.plan:
            if op == "flatten":
                h = h.flatten(2)
            elif op == "linear":
                w, b = self.stack[arg + "/weight"], self.stack[arg + "/bias"]
                h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            elif op == "dropout":
                h = F.dropout(h, arg, self.training)  # elementwise masks: independent across seeds
            else:
                h = arg(h)
        return h

    def configure_optimizers(self):
        from techbench.techniques.optimizers import build_optimizer
        from techbench.techniques.schedules import build_schedule

        optimizer = build_optimizer(self.cfg["optimizer"], self)
        if type(optimizer) in (torch.optim.Adam, torch.optim.AdamW):
            # One fused kernel over the few large stacked tensors instead of ~10 passes each: the same update.
            for group in optimizer.param_groups:
                group.update(fused=True, foreach=False)
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        steps = max(int(self.trainer.estimated_stepping_batches), 1)
        schedule = build_schedule(
            self.cfg["schedule"], optimizer, epochs=epochs, steps_per_epoch=max(steps // epochs, 1)
        )
        return optimizer if schedule is None else {"optimizer": optimizer, "lr_scheduler": schedule}

    def _add(self, stage: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-seed mean losses (K,) of a batch, accumulated as per-seed sums for the epoch."""
        k, b = logits.shape[:2]
        losses = F.cross_entropy(logits.reshape(k * b, -1), y.reshape(-1), reduction="none").view(k, b)
        correct = (logits.detach().argmax(-1) == y).sum(1).float()
        s = self._sums
        s[f"{stage}/loss"] = s.get(f"{stage}/loss", 0) + losses.detach().sum(1)
        s[f"{stage}/correct"] = s.get(f"{stage}/correct", 0) + correct
        s[f"{stage}/n"] = s.get(f"{stage}/n", 0) + b
        return losses.mean(1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self._add("train", self._forward(x, shared_input=False), y).sum()

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self._add("val", self._forward(x, shared_input=True), y.expand(self.k, -1))

    def on_train_epoch_start(self):
        self._sums = {}
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self):
        seconds = time.perf_counter() - self._epoch_start
        self.epoch_times.append(seconds)
        s = self._sums
        epoch = {m: s[f"{st}/{q}"] / s[f"{st}/n"] for st in ("train", "val") if f"{st}/n" in s for m, q in _pairs(st)}
        epoch["lr"] = torch.full((self.k,), self.trainer.optimizers[0].param_groups[0]["lr"])
        epoch["time/epoch_s"] = torch.full((self.k,), seconds / self.k)  # the stack's time, amortized per seed
        self.history.append({m: v.detach().cpu() for m, v in epoch.items()})
        self._sums = {}

    def unstacked(self, models: list[nn.Module]) -> list[nn.Module]:
        """The K trained models, as ordinary modules (copies of ``models`` with the stacked weights)."""
        out = []
        for i, m in enumerate(models):
            m = copy.deepcopy(m)
            state = {n: p[i].detach().clone() for n, p in self._params().items()}
            state.update({n: b[i].clone() for n, b in self.stacked_buffers.items()})
            m.load_state_dict(state)
            out.append(m)
        return out


def _sequential_plan(model: nn.Module) -> list[tuple[str, Any]] | None:
    """[(op, argument)] for an nn.Sequential of Flatten / Linear (with bias) / activation / Dropout layers, the
    MLP and logistic-regression shapes; None for anything else (those go through vmap)."""
    if not isinstance(model, nn.Sequential):
        return None
    plan: list[tuple[str, Any]] = []
    for name, layer in model.named_children():
        if isinstance(layer, nn.Flatten) and layer.start_dim == 1 and layer.end_dim == -1:
            plan.append(("flatten", None))
        elif type(layer) is nn.Linear and layer.bias is not None:
            plan.append(("linear", name))
        elif type(layer) in (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU):
            plan.append(("activation", layer))
        elif type(layer) is nn.Dropout:
            plan.append(("dropout", layer.p))
        else:
            return None
    return plan


def _pairs(stage: str) -> list[tuple[str, str]]:
    return [(f"{stage}/loss", "loss"), (f"{stage}/acc", "correct")]


def train_seeds(cfg: RunConfig, seeds: list[int], tracker: Tracker | None = None, data=None) -> list[RunResult]:
    """Train ``seeds`` of ``cfg`` as one stack; one MLflow run per seed, as train_one would log it. ``data``:
    one dataset for every seed (a restart procedure's), instead of each seed's own draw."""
    from techbench.training.run import _step_memory_mb

    models, datas = [], []
    for seed in seeds:  # each seed's data and initialization exactly as train_one draws them
        L.seed_everything(seed, workers=True, verbose=False)
        datas.append(data if data is not None else load_dataset(cfg.data, seed))
        config = apply_batching(cfg.as_dict(), len(datas[-1].x_train))
        models.append(build_run_model(config, datas[-1]))
    train = config["train"]
    module = VectorizedModule(models, config)
    trainer = make_trainer(cfg.hardware, train, logger=False)
    start = time.perf_counter()
    trainer.fit(module, datamodule=_Data(datas, train["batch_size"], seeds))
    fit_s = time.perf_counter() - start
    k, epochs, n_train = len(seeds), len(module.epoch_times), len(datas[0].x_train)
    shared = {  # per seed, with the stack's time amortized over its K seeds
        "time/fit_s": fit_s / k,
        "epochs_run": float(epochs),
        "steps_per_epoch": float(trainer.num_training_batches),
        "updates": float(trainer.global_step),
        "throughput/samples_per_s": n_train * epochs * k / fit_s if fit_s > 0 else float("nan"),
        "effective_batch": float(train["batch_size"] * train["accumulate_grad_batches"]),
        "memory/step_mb": _step_memory_mb(models[0], config, datas[0]),
        "vectorized_k": float(k),
    }
    results = []
    for i, (seed, model) in enumerate(zip(seeds, module.unstacked(models), strict=True)):
        history = [{m: float(v[i]) for m, v in epoch.items()} for epoch in module.history]
        results.append(_finish(cfg, seed, config, model, datas[i], history, shared, tracker))
    return results


def _finish(cfg, seed, config, model, data, history, shared, tracker) -> RunResult:
    test = evaluate(model, data.x_test, data.y_test)
    metrics = {"test/acc": test["acc"], "test/loss": test["loss"], **shared}
    metrics["train/final_acc"] = evaluate(model, data.x_train, data.y_train)["acc"]
    metrics["gen_gap"] = metrics["train/final_acc"] - metrics["test/acc"]
    extra, probs = post_fit_metrics(model, config, data)
    metrics.update(extra)
    bad_epoch = next((e for e, h in enumerate(history) if not all(map(_finite, h.values()))), None)
    # A seed that blew up kept training inside the stack; it is recorded as diverged from that epoch's updates.
    diverged = None if bad_epoch is None else int(bad_epoch * shared["steps_per_epoch"])
    if diverged is not None:
        metrics["diverged_step"] = float(diverged)
    run_id = None
    if tracker is not None:
        logger = tracker.logger(cfg.study, run_name(cfg, seed), {**run_tags(cfg, seed), "execution": "vectorized"})
        n_params = sum(p.numel() for p in model.parameters())
        logger.log_hyperparams({**flatten(config), "seed": seed, "n_params": n_params, "n_train": len(data.x_train)})
        for epoch, values in enumerate(history):
            logger.log_metrics(values, step=epoch)
        if config["train"]["save_predictions"]:
            _log_predictions(logger, probs)
        logger.log_metrics(metrics, step=len(history))
        logger.experiment.set_tag(logger.run_id, "outcome", "diverged" if diverged is not None else "completed")
        logger.experiment.set_tag(logger.run_id, "complete", "1")
        logger.finalize("success")
        run_id = logger.run_id
    return RunResult(run_id, seed, metrics, "diverged" if diverged is not None else "completed", diverged, model)


def _finite(v: float) -> bool:
    return v == v and abs(v) != float("inf")
